"""Atomic JSON writes, numpy-aware encoding and content digests (llmboost.jsonio)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmboost.jsonio import digest, to_jsonable, write_json


def test_write_json_converts_numpy_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "folder" / "r.json"
    write_json(path, {"n": np.int64(3), "x": np.float32(0.5), "v": np.arange(3), "p": tmp_path})
    assert json.loads(path.read_text()) == {"n": 3, "x": 0.5, "v": [0, 1, 2], "p": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"ok": 1})

    class Unencodable:
        def __str__(self) -> str:
            raise RuntimeError("cannot encode")

    with pytest.raises(RuntimeError):
        write_json(path, {"bad": Unencodable()})
    assert json.loads(path.read_text()) == {"ok": 1}


def test_digest_is_stable_under_key_order_and_changes_with_any_value():
    a = digest({"lr": 1e-3, "dims": [64, 32]})
    assert a == digest({"dims": [64, 32], "lr": 1e-3}) and len(a) == 12
    assert a != digest({"lr": 2e-3, "dims": [64, 32]})
    assert len(digest([1, 2], 16)) == 16
    assert to_jsonable(np.bool_(True)) is True
