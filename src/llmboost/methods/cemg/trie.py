"""A prefix trie over valid semantic IDs, as dense tables for batched constrained decoding.

Node 0 is the root; ``children[node, code]`` is the child node reached by ``code`` (or -1), so the
valid next codes of many beams are one gather: ``children[nodes] >= 0``. A full path (one code per
level) ends at a leaf whose ``item`` is the item id. Beam search masked this way can only produce IDs
of real items (TIGER Sec. 3.2 notes invalid IDs as a failure mode of unconstrained decoding).
"""

from __future__ import annotations

import numpy as np
import torch


class SemanticIDTrie:
    """The valid ID prefixes of an ``(n_items, L)`` code table."""

    def __init__(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or not len(codes):
            raise ValueError("the trie needs a non-empty (n_items, levels) code table")
        n, levels = codes.shape
        self.levels = levels
        self.width = int(codes.max()) + 1
        node_of = np.zeros(n, dtype=np.int64)  # current node of each item's path
        children_rows: list[np.ndarray] = [np.full(self.width, -1, dtype=np.int64)]
        next_node = 1
        leaf_item = {}
        for level in range(levels):
            keys = node_of * self.width + codes[:, level]
            unique, inverse = np.unique(keys, return_inverse=True)
            new_ids = np.arange(next_node, next_node + len(unique))
            parents, child_codes = unique // self.width, unique % self.width
            for parent, code, child in zip(parents.tolist(), child_codes.tolist(), new_ids.tolist(), strict=True):
                children_rows[parent][code] = child
            next_node += len(unique)
            node_of = new_ids[inverse.reshape(-1)]
            if level < levels - 1:
                children_rows += [np.full(self.width, -1, dtype=np.int64) for _ in range(len(unique))]
        if len(np.unique(node_of)) != n:
            raise ValueError("semantic IDs are not unique: two items share a full code path")
        first_leaf = next_node - n
        leaf_item = np.full(n, -1, dtype=np.int64)
        leaf_item[node_of - first_leaf] = np.arange(n)
        self.children = torch.from_numpy(np.stack(children_rows))  # (internal nodes, width)
        self.first_leaf = first_leaf
        self.leaf_item = torch.from_numpy(leaf_item)

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        """Bool mask (B, width) of the valid next codes from internal ``nodes`` (B,)."""
        return self.children[nodes] >= 0

    def step(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Child nodes reached from ``nodes`` by ``codes`` (-1 if invalid)."""
        return self.children[nodes, codes]

    def items(self, leaves: torch.Tensor) -> torch.Tensor:
        """Item id of each leaf node."""
        return self.leaf_item[leaves - self.first_leaf]

    def prefix_allowed(self, prefix: list[int]) -> list[int]:
        """Valid next codes after ``prefix`` (for token-level constraints of a causal LM)."""
        node = 0
        for code in prefix:
            if node >= len(self.children) or code >= self.width:
                return []
            node = int(self.children[node, code])
            if node < 0:
                return []
        if node >= len(self.children):
            return []
        return torch.nonzero(self.children[node] >= 0).squeeze(1).tolist()
