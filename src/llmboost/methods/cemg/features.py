"""Item features for CEMG: text, visual and collaborative modalities (paper: multimodal item
representations fed to the fusion layer).

A modality is an ``(n_items, d)`` float32 matrix plus a boolean ``present`` mask: items lacking the
modality (empty text, no row in a visual feature file) have ``present=False`` and a zero row, and the
fusion layer masks them out. A modality nobody provides (the shared datasets have no images) is
simply absent from :class:`ItemFeatures`, and :meth:`ItemFeatures.describe` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmboost.data.dataset import Dataset

logger = logging.getLogger(__name__)


class FeatureFileError(ValueError):
    """A feature file is unreadable or does not match the dataset; the message names file/row/field."""


@dataclass
class Modality:
    """One modality: features per item id and which items have it."""

    name: str
    values: np.ndarray  # (n_items, d) float32, zero rows where missing
    present: np.ndarray  # (n_items,) bool
    source: str = ""

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        self.present = np.asarray(self.present, dtype=bool)
        if self.values.ndim != 2 or len(self.values) != len(self.present):
            raise ValueError(f"modality {self.name}: values must be (n_items, d) matching present")
        bad = ~np.isfinite(self.values).all(1)
        if bad.any():  # a NaN/inf row is a missing row, never a silent NaN in training
            logger.warning("modality %s: %d items with non-finite features treated as missing", self.name, bad.sum())
            self.values[bad] = 0.0
            self.present = self.present & ~bad
        self.values[~self.present] = 0.0

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclass
class ItemFeatures:
    """Content modalities (text, visual, ...) and the collaborative embedding of every item."""

    n_items: int
    content: dict[str, Modality] = field(default_factory=dict)
    collaborative: np.ndarray | None = None

    def add(self, modality: Modality) -> None:
        if len(modality.present) != self.n_items:
            raise ValueError(
                f"modality {modality.name} has {len(modality.present)} rows, dataset has {self.n_items} items"
            )
        self.content[modality.name] = modality

    def describe(self) -> dict[str, object]:
        """Which modalities exist and their coverage; absent modalities are named as absent."""
        out: dict[str, object] = {}
        for name in ("text", "llm", "visual"):
            m = self.content.get(name)
            out[name] = (
                {"dim": m.dim, "coverage": float(m.present.mean()), "source": m.source} if m is not None else "absent"
            )
        for name, m in self.content.items():
            if name not in out:
                out[name] = {"dim": m.dim, "coverage": float(m.present.mean()), "source": m.source}
        out["collaborative"] = "absent" if self.collaborative is None else {"dim": int(self.collaborative.shape[1])}
        no_content = self.items_without_content()
        out["items_without_content"] = int(no_content.sum())
        return out

    def items_without_content(self) -> np.ndarray:
        if not self.content:
            return np.ones(self.n_items, dtype=bool)
        return ~np.any([m.present for m in self.content.values()], axis=0)


def item_texts(dataset: Dataset, fields: Sequence[str] = ("title",)) -> list[str]:
    """One text per item id from the core's :class:`~llmboost.data.text.ItemText`; fields the dataset
    lacks are skipped with a warning (the CPU preset asks for genres, which only MovieLens has)."""
    have = [f for f in fields if f in dataset.item_meta.columns]
    if not have:
        raise ValueError(
            f"none of the text fields {list(fields)} is in dataset {dataset.name}; "
            f"it has {list(dataset.item_meta.columns)}"
        )
    if len(have) < len(fields):
        logger.warning("%s: text fields %s absent, using %s", dataset.name, sorted(set(fields) - set(have)), have)
    return dataset.item_text(have).texts


def text_modality(
    texts: Sequence[str], model: str = "all-minilm-l6-v2", cache_dir: str | None = None, progress: bool = False
) -> Modality:
    """Sentence embeddings of item text (``llmboost.llm.embeddings.encode_texts``); empty text is missing."""
    from llmboost.llm.embeddings import encode_texts

    present = np.array([bool(t.strip()) for t in texts])
    values = np.zeros((len(texts), 1), dtype=np.float32)
    if present.any():
        kwargs = {"cache_dir": cache_dir} if cache_dir else {}
        encoded = encode_texts(
            [t for t, p in zip(texts, present, strict=True) if p], model=model, progress=progress, **kwargs
        )
        values = np.zeros((len(texts), encoded.shape[1]), dtype=np.float32)
        values[present] = encoded
    if (~present).any():
        logger.warning("%d items have no text: the text modality is missing for them", int((~present).sum()))
    return Modality("text", values, present, source=model)


def llm_hidden_modality(texts: Sequence[str], llm_setting: str, batch_size: int = 16) -> Modality:
    """Mean last-layer hidden states of a causal LM over each item's text (an optional text modality)."""
    import torch

    from llmboost.llm.models import load_model

    llm = load_model(llm_setting)
    tokenizer, model = llm.tokenizer, llm.model  # type: ignore[attr-defined]
    present = np.array([bool(t.strip()) for t in texts])
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = [t or " " for t in texts[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=64)
            out = model(**enc, output_hidden_states=True)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            hidden = out.hidden_states[-1].float()
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
    return Modality("llm", np.concatenate(rows), present, source=llm_setting)


def load_feature_file(
    path: str | Path, item_ids: Sequence[str] | pd.Index, name: str = "visual", id_column: str = "item_id"
) -> Modality:
    """Read a user-provided feature file with one row per item and align it to the dataset's items.

    Formats: Parquet or CSV with an ``id_column`` and either one list-valued column or numeric feature
    columns; ``.npy`` with exactly one row per dataset item, in item-id order; ``.npz`` with arrays
    ``ids`` and ``features``. Dataset items without a row get the modality marked missing (logged);
    duplicate ids, ids not in the dataset, or a file matching no dataset item are errors.
    """
    path = Path(path)
    if not path.exists():
        raise FeatureFileError(f"{name} feature file {path} does not exist")
    known = pd.Index([str(i) for i in item_ids])
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
        if values.ndim != 2 or len(values) != len(known):
            raise FeatureFileError(
                f"{path}: a .npy feature file must have one row per dataset item ({len(known)} x d) in item-id "
                f"order; got shape {values.shape}. Use Parquet/CSV/.npz with an id column to give ids."
            )
        return Modality(name, values.astype(np.float32), np.ones(len(known), dtype=bool), source=str(path))
    if suffix == ".npz":
        blob = np.load(path, allow_pickle=False)
        for key in ("ids", "features"):
            if key not in blob:
                raise FeatureFileError(f"{path}: .npz feature file needs arrays 'ids' and 'features'; missing {key!r}")
        ids = pd.Series([str(i) for i in blob["ids"]])
        matrix = np.asarray(blob["features"], dtype=np.float32)
    elif suffix in (".parquet", ".pq", ".csv", ".tsv"):
        frame = (
            pd.read_parquet(path)
            if suffix in (".parquet", ".pq")
            else pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        )
        if id_column not in frame.columns:
            raise FeatureFileError(f"{path}: no id column {id_column!r}; columns are {list(frame.columns)[:10]}")
        ids = frame.pop(id_column).astype(str).reset_index(drop=True)
        matrix = _matrix_from_frame(frame, path)
    else:
        raise FeatureFileError(f"{path}: unsupported feature file type {suffix!r} (use .parquet, .csv, .npy or .npz)")
    if len(ids) != len(matrix):
        raise FeatureFileError(f"{path}: {len(ids)} ids but {len(matrix)} feature rows")
    dup = ids.duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())[:5]
        raise FeatureFileError(
            f"{path}: duplicate item ids, e.g. {ids.iloc[rows[0]]!r} at data rows {rows.tolist()} "
            f"({int(dup.sum())} rows share an id); give one row per item"
        )
    position = known.get_indexer(ids)
    unknown = position < 0
    if unknown.all():
        raise FeatureFileError(
            f"{path}: none of its {len(ids)} ids (e.g. {ids.iloc[0]!r}) is an item of the dataset "
            f"(e.g. {known[0]!r}); wrong file or id column?"
        )
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        raise FeatureFileError(
            f"{path}: {int(unknown.sum())} ids are not items of the dataset, first {ids.iloc[first]!r} at data row "
            f"{first}; remove them or filter the file to the dataset's items"
        )
    values = np.zeros((len(known), matrix.shape[1]), dtype=np.float32)
    present = np.zeros(len(known), dtype=bool)
    values[position] = matrix
    present[position] = True
    if (~present).any():
        logger.warning(
            "%s: %d of %d items have no %s features (modality missing for them)",
            path,
            int((~present).sum()),
            len(known),
            name,
        )
    return Modality(name, values, present, source=str(path))


def _matrix_from_frame(frame: pd.DataFrame, path: Path) -> np.ndarray:
    if frame.shape[1] == 1 and frame.iloc[:, 0].map(lambda v: isinstance(v, (list, np.ndarray))).all():
        column = frame.columns[0]
        lengths = frame[column].map(len)
        if lengths.nunique() != 1:
            row = int(np.flatnonzero(lengths.to_numpy() != lengths.iloc[0])[0])
            raise FeatureFileError(
                f"{path}: row {row} field {column!r} has {lengths.iloc[row]} values, row 0 has {lengths.iloc[0]}"
            )
        return np.stack(frame[column].to_numpy()).astype(np.float32)
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & frame.notna()
    if bad.to_numpy().any():
        row, col = map(int, np.argwhere(bad.to_numpy())[0])
        line = f", line {row + 2}" if path.suffix.lower() in (".csv", ".tsv") else ""
        raise FeatureFileError(f"{path}{line}: field {frame.columns[col]!r} = {frame.iat[row, col]!r} is not a number")
    return numeric.to_numpy(dtype=np.float32)


def collaborative_embeddings(model: object) -> np.ndarray:
    """Item embeddings of a trained SASRec (input item table) or BPR-MF (item factors), (n_items, d)."""
    network = getattr(model, "network_", None)
    if network is None:
        raise ValueError("collaborative embeddings need a trained SASRec or BPR-MF (call fit first)")
    if hasattr(network, "item_embedding"):
        weights = network.item_embedding.weight[1:]  # row 0 is SASRec's padding
    elif hasattr(network, "item_factors"):
        weights = network.item_factors.weight
    else:
        raise ValueError(f"{type(model).__name__} has no item embedding table")
    return weights.detach().cpu().numpy().astype(np.float32)
