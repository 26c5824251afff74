"""Item-to-item models: hand-computed similarities, serving from the last items, save/load, real data."""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmboost.data import load_dataset
from llmboost.data.interactions import Interactions
from llmboost.evaluation import evaluate
from llmboost.models import REGISTRY, Item2Vec, ItemCF, MostPopular, Recommender, Swing
from llmboost.models.item2vec import skipgram_pairs
from llmboost.models.neighbors import kernel_lanes, sparse_top_k
from llmboost.splitting import leave_one_out, make_slices
from tests.factories import events_dataset, two_communities

# u0: {0, 1}, u1: {0, 1, 2}, u2: {1, 2}  (items named so their ids are 0, 1, 2)
TOY = [("a", "i0", 0), ("a", "i1", 1), ("b", "i0", 0), ("b", "i1", 1), ("b", "i2", 2), ("c", "i1", 0), ("c", "i2", 1)]


def _sim(model, i: int, j: int) -> float:
    ids, vals = model.similar_items(i)
    return float(vals[list(ids).index(j)]) if j in ids else 0.0


@pytest.fixture(scope="module")
def toy():
    data = events_dataset(TOY)
    assert list(data.items.decode(np.arange(3))) == ["i0", "i1", "i2"]
    return data.interactions


def test_registered() -> None:
    assert {"itemcf", "swing", "item2vec"} <= set(REGISTRY)


def test_itemcf_cosine_by_hand(toy) -> None:
    m = ItemCF(k=5, progress=False).fit(toy)
    assert _sim(m, 0, 1) == pytest.approx(2 / math.sqrt(2 * 3))
    assert _sim(m, 0, 2) == pytest.approx(1 / math.sqrt(2 * 2))
    assert _sim(m, 1, 0) == pytest.approx(_sim(m, 0, 1))
    assert 0 not in m.similar_items(0)[0]  # never its own neighbour


def test_itemcf_inverse_user_frequency_by_hand(toy) -> None:
    m = ItemCF(k=5, iuf=True, progress=False).fit(toy)
    assert _sim(m, 0, 1) == pytest.approx((1 / math.log(3) + 1 / math.log(4)) / math.sqrt(6), rel=1e-5)
    assert _sim(m, 0, 2) == pytest.approx((1 / math.log(4)) / 2, rel=1e-5)


def test_swing_by_hand(toy) -> None:
    plain = Swing(k=5, alpha=1.0, user_power=0.0, progress=False).fit(toy)
    assert _sim(plain, 0, 1) == pytest.approx(1 / 3)  # users {a, b} share {0, 1}: 1 / (1 + 2)
    assert _sim(plain, 1, 2) == pytest.approx(1 / 3)  # users {b, c} share {1, 2}
    assert _sim(plain, 0, 2) == 0.0  # only one user has both: no swing
    weighted = Swing(k=5, alpha=1.0, user_power=0.5, progress=False).fit(toy)
    assert _sim(weighted, 0, 1) == pytest.approx((2**-0.5 * 3**-0.5) / 3, rel=1e-5)


def _swing_reference(histories: list[set[int]], n_items: int, alpha: float, power: float) -> np.ndarray:
    users_of = [[u for u, h in enumerate(histories) if i in h] for i in range(n_items)]
    sim = np.zeros((n_items, n_items))
    for i in range(n_items):
        for u, v in itertools.combinations(users_of[i], 2):
            common = histories[u] & histories[v]
            w = len(histories[u]) ** -power * len(histories[v]) ** -power / (alpha + len(common))
            for j in common - {i}:
                sim[i, j] += w
    return sim


def _require_method(method: str) -> None:
    if method == "numba":
        pytest.importorskip("numba", reason="the compiled Swing needs the 'fast' extra")


@pytest.mark.parametrize("method", ["numba", "pairs", "items"])
def test_swing_matches_the_triple_loop(method: str) -> None:
    _require_method(method)
    data = two_communities(n_users=40, n_items=16, per_user=5, seed=3).interactions
    histories = [set(data.history(u).tolist()) for u in range(data.n_users)]
    ref = _swing_reference(histories, data.n_items, alpha=0.5, power=0.3)
    m = Swing(k=16, alpha=0.5, user_power=0.3, method=method, progress=False).fit(data)
    for i in range(data.n_items):
        ids, vals = m.similar_items(i)
        np.testing.assert_allclose(vals, ref[i, ids], rtol=1e-5)
        assert len(ids) == (ref[i] > 0).sum()


@pytest.mark.parametrize("method", ["numba", "pairs"])
def test_swing_methods_agree_with_event_weights(method: str) -> None:
    _require_method(method)
    data = two_communities(n_users=60, n_items=20, per_user=6, seed=5).interactions
    w = np.random.default_rng(0).uniform(0.2, 1.0, len(data)).astype(np.float32)
    ref = Swing(k=20, method="items", progress=False).fit(data, weights=w)
    got = Swing(k=20, method=method, progress=False).fit(data, weights=w)
    for i in range(data.n_items):
        ids, vals = got.similar_items(i)
        ref_ids = ref.similar_items(i)[0]
        assert set(ids.tolist()) == set(ref_ids.tolist())
        np.testing.assert_allclose(vals, [_sim(ref, i, j) for j in ids], rtol=1e-5)


def test_user_item_csr_counts_repeats_once_with_sorted_rows() -> None:
    """``Interactions.csr`` (built through the CSC) equals the dense binary matrix and is canonical."""
    data = two_communities(n_users=30, n_items=12, per_user=6, seed=7).interactions
    data = Interactions.concat([data, data.select(data.users % 3 == 0)])  # repeated events
    dense = np.zeros((data.n_users, data.n_items), np.float32)
    dense[data.users, data.items] = 1.0
    m = data.csr()
    assert m.has_canonical_format
    assert all(np.all(np.diff(m.indices[m.indptr[u] : m.indptr[u + 1]]) > 0) for u in range(data.n_users))
    np.testing.assert_array_equal(m.toarray(), dense)
    csc = data.csc()  # the column layout: each item's users ascending, the same matrix
    assert csc.has_canonical_format
    np.testing.assert_array_equal(csc.toarray(), dense)


def test_neighbor_matrix_compiled_and_numpy_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving matrix holds exactly the table's non-padding entries, with or without the compiled kernel
    (padding anywhere in a row, not only at its end)."""
    import llmboost.models.neighbors as neighbors

    ids = np.array([[2, 1, -1], [-1, -1, -1], [0, -1, 2]])
    scores = np.array([[0.9, 0.5, 0.0], [0.0, 0.0, 0.0], [0.7, 0.0, 0.2]], np.float32)
    dense = np.zeros((3, 3), np.float32)
    for row, col in zip(*np.nonzero(ids >= 0), strict=True):
        dense[row, ids[row, col]] = scores[row, col]
    got = [neighbors.neighbor_matrix(ids, scores, 3)]
    monkeypatch.setattr(neighbors, "compiled_kernels", lambda: None)
    got.append(neighbors.neighbor_matrix(ids, scores, 3))
    for m in got:
        assert m.nnz == 4 and m.dtype == np.float32
        np.testing.assert_array_equal(m.toarray(), dense)


@pytest.mark.parametrize("iuf", [False, True])
def test_itemcf_compiled_equals_the_sparse_product(iuf: bool) -> None:
    pytest.importorskip("numba", reason="the compiled ItemCF needs the 'fast' extra")
    data = two_communities(n_users=80, n_items=40, per_user=8, seed=2).interactions
    w = np.random.default_rng(1).uniform(0.2, 1.0, len(data)).astype(np.float32)
    for weights in (None, w):
        a = ItemCF(k=7, iuf=iuf, shrink=0.5, method="numba", progress=False).fit(data, weights=weights)
        b = ItemCF(k=7, iuf=iuf, shrink=0.5, method="numpy", progress=False).fit(data, weights=weights)
        np.testing.assert_array_equal(a.neighbors_, b.neighbors_)
        np.testing.assert_allclose(a.neighbor_scores_, b.neighbor_scores_, rtol=1e-6)


def test_sparse_top_k_matches_a_lexicographic_sort() -> None:
    rng = np.random.default_rng(1)
    rows = np.sort(rng.integers(0, 30, 3000))
    cols = rng.integers(0, 500, 3000)
    values = (rng.integers(-3, 12, 3000) / 7).astype(np.float32)  # ties and non-positive values
    ids, vals = sparse_top_k(rows, cols, values, 32, 10)
    for r in range(32):
        mine = [(-float(v), int(c)) for c, v in zip(cols[rows == r], values[rows == r], strict=True) if v > 0]
        want = sorted(set(mine))[:10] if len(set(mine)) == len(mine) else sorted(mine)[:10]
        assert ids[r][ids[r] >= 0].tolist() == [c for _, c in want]
        np.testing.assert_array_equal(vals[r][: len(want)], [-v for v, _ in want])
    assert (ids[30:] == -1).all()


def test_serving_aggregates_the_last_items(toy) -> None:
    m = ItemCF(k=5, last_n=1, fallback="none", progress=False).fit(toy)
    # user a's last item is i1: scores are the row of i1
    row = m.score(np.array([0])).numpy()[0]
    assert row[0] == pytest.approx(_sim(m, 1, 0)) and row[2] == pytest.approx(_sim(m, 1, 2))
    decayed = ItemCF(k=5, last_n=2, recency_decay=0.5, fallback="none", progress=False).fit(toy)
    row = decayed.score(np.array([0])).numpy()[0]
    assert row[2] == pytest.approx(_sim(decayed, 1, 2) + 0.5 * _sim(decayed, 0, 2))


def test_popularity_fallback_keeps_neighbours_first(toy) -> None:
    m = ItemCF(k=1, last_n=1, progress=False).fit(toy)
    scores = m.score(np.array([2])).numpy()[0]  # user c, last item i2: its one neighbour is i1
    top = m.similar_items(2)[0][0]
    assert scores[top] > 1.0 and all(scores[j] < 1.0 for j in range(3) if j != top)


def test_weights_change_similarity(toy) -> None:
    w = np.ones(len(toy), np.float32)
    w[-1] = 0.25  # c's i2 event counts less
    m = ItemCF(k=5, fallback="none", progress=False).fit(toy, weights=w)
    assert _sim(m, 1, 2) < _sim(ItemCF(k=5, progress=False).fit(toy), 1, 2)
    with pytest.raises(ValueError, match="positive"):
        ItemCF(progress=False).fit(toy, weights=np.zeros(len(toy)))


def test_skipgram_pairs_respect_users_and_window() -> None:
    users = np.array([0, 0, 0, 1, 1])
    c, o = skipgram_pairs(users, np.arange(5), window=1)
    assert sorted(zip(c.tolist(), o.tolist(), strict=True)) == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]
    c, _ = skipgram_pairs(users, np.arange(5), window=None)
    assert len(c) == 2 * (3 + 1)


def test_item2vec_finds_communities() -> None:
    dataset = two_communities(n_users=200, n_items=20, per_user=6, seed=0)
    group = np.array([int(name[1:]) >= 10 for name in dataset.items.decode(np.arange(20))])
    m = Item2Vec(k=5, dim=16, epochs=5, lr=0.05, progress=False).fit(dataset.interactions)
    same = np.mean([(group[m.similar_items(i)[0]] == group[i]).mean() for i in range(20)])
    assert same > 0.9


@pytest.mark.parametrize("cls", [ItemCF, Swing, Item2Vec])
def test_save_load_roundtrip(cls, toy, tmp_path) -> None:
    extra = {"epochs": 1, "dim": 8} if cls is Item2Vec else {}
    m = cls(k=3, progress=False, **extra).fit(toy)
    loaded = Recommender.load(m.save(tmp_path / "m.pt"))
    assert isinstance(loaded, cls) and loaded.get_params() == m.get_params()
    np.testing.assert_array_equal(loaded.neighbors_, m.neighbors_)
    np.testing.assert_array_equal(loaded.score(np.arange(3)).numpy(), m.score(np.arange(3)).numpy())


def test_bad_settings(toy) -> None:
    with pytest.raises(ValueError, match="last_n"):
        ItemCF(last_n=0).fit(toy)
    with pytest.raises(ValueError, match="alpha"):
        Swing(alpha=0.0, progress=False).fit(toy)
    with pytest.raises(ValueError, match="empty"):
        ItemCF().fit(toy.select(np.zeros(len(toy), bool)))
    with pytest.raises(ValueError, match="num_threads"):
        kernel_lanes(-1)


@pytest.mark.realdata
def test_movielens_i2i_beats_popularity(shared_datasets: Path) -> None:
    split = leave_one_out(load_dataset(shared_datasets / "movielens-100k", cache=False))
    slices = make_slices(split.train)
    pop = evaluate(MostPopular().fit(split.train), split, ks=(20,), slices=slices).summary()
    for model in (ItemCF(iuf=True, progress=False), Swing(progress=False)):
        got = evaluate(model.fit(split.train), split, ks=(20,), slices=slices).summary()
        assert got["Recall@20"] > pop["Recall@20"] * 1.3, type(model).__name__
        assert got["long_tail/Recall@20"] > pop["long_tail/Recall@20"]


def _swing_pure_python(histories: list[list[int]], n_items: int, alpha: float, power: float) -> list[dict]:
    """The benchmark's straightforward Swing (dict per item), for sparse real slices."""
    sets = [set(h) for h in histories]
    users_of: list[list[int]] = [[] for _ in range(n_items)]
    for u, h in enumerate(sets):
        for i in h:
            users_of[i].append(u)
    out = []
    for i in range(n_items):
        sim: dict[int, float] = {}
        for u, v in itertools.combinations(users_of[i], 2):
            common = sets[u] & sets[v]
            w = len(sets[u]) ** -power * len(sets[v]) ** -power / (alpha + len(common))
            for j in common - {i}:
                sim[j] = sim.get(j, 0.0) + w
        out.append(sim)
    return out


@pytest.mark.realdata
def test_swing_equals_the_pure_python_reference_on_beauty(shared_datasets: Path) -> None:
    train = leave_one_out(load_dataset(shared_datasets / "amazon-beauty", cache=False)).train
    sub = train.select(train.users < 1000)
    ref = _swing_pure_python([sub.history(u).tolist() for u in range(sub.n_users)], sub.n_items, 1.0, 0.5)
    methods = ["pairs"] + (["numba"] if importlib.util.find_spec("numba") else [])
    for method in methods:
        m = Swing(k=50, alpha=1.0, user_power=0.5, method=method, progress=False).fit(sub)
        for i in range(sub.n_items):
            ids, vals = m.similar_items(i)
            if len(ref[i]) <= 50:
                assert set(ids.tolist()) == set(ref[i]), (method, i)
            else:  # the 50 largest: nothing left out is larger than the smallest kept
                assert min(vals) >= max(v for j, v in ref[i].items() if j not in set(ids.tolist())) * (1 - 1e-5)
            np.testing.assert_allclose(vals, [ref[i][j] for j in ids], rtol=1e-5)


@pytest.mark.realdata
def test_compiled_neighbours_do_not_depend_on_the_number_of_threads(shared_datasets: Path) -> None:
    """The compiled kernels split users and items over lanes in chunks (more chunks than lanes here, and more
    lanes than cores with 3): the tables are bitwise equal for 1, 2 and 3 threads, with and without weights."""
    pytest.importorskip("numba", reason="the compiled kernels need the 'fast' extra")
    train = leave_one_out(load_dataset(shared_datasets / "amazon-beauty", cache=False)).train
    sub = train.select(train.users < 3000)
    w = np.random.default_rng(0).uniform(0.2, 1.0, len(sub)).astype(np.float32)
    for cls in (Swing, ItemCF):
        for weights in (None, w):
            tables = [cls(method="numba", num_threads=t, progress=False).fit(sub, weights=weights) for t in (1, 2, 3)]
            assert (tables[0].neighbors_ >= 0).sum() > sub.n_items  # a real table, not an empty one
            for other in tables[1:]:
                np.testing.assert_array_equal(other.neighbors_, tables[0].neighbors_)
                np.testing.assert_array_equal(other.neighbor_scores_, tables[0].neighbor_scores_)


def test_compiled_kernels_leave_torch_thread_count_alone() -> None:
    """numba's OpenMP layer sets the process's OpenMP thread count when a parallel kernel starts, and that count
    is torch's too: after a 2-thread ItemCF or Swing fit torch ran on 2 threads where the user had set 1."""
    pytest.importorskip("numba", reason="the compiled kernels need the 'fast' extra")
    import torch

    before = torch.get_num_threads()
    train = two_communities(n_users=60, n_items=20, per_user=6, seed=5).interactions
    try:
        torch.set_num_threads(1)
        for cls in (Swing, ItemCF):
            cls(method="numba", num_threads=2, progress=False).fit(train)
            assert torch.get_num_threads() == 1, cls.__name__
    finally:
        torch.set_num_threads(before)


_COMPILE_KERNELS = """
import warnings
import numpy as np
import scipy.sparse as sp
from numba.core.errors import NumbaPerformanceWarning
warnings.simplefilter("error", NumbaPerformanceWarning)
from llmboost.models import _kernels as K
r = sp.random(30, 20, density=0.3, format="csr", random_state=0)
c = r.tocsc()
c.sort_indices()
K.swing_top_k(r.indptr, r.indices, r.data, c.indptr, c.indices, c.data, True, np.ones(30), 1.0, 5, 2)
K.itemcf_top_k(c.indptr, c.indices, c.data, r.indptr, r.indices, r.data, np.ones(20), 0.0, 5, 2)
"""


def test_parallel_kernels_compile_without_numba_performance_warnings(tmp_path: Path) -> None:
    """Compiled from scratch (an empty numba cache), the parallel kernels raise no NumbaPerformanceWarning: array
    expressions inside a ``parallel`` kernel would be compiled as parallel functions with nothing to run in
    parallel, and numba warns (it did, once)."""
    pytest.importorskip("numba", reason="the compiled kernels need the 'fast' extra")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    done = subprocess.run([sys.executable, "-c", _COMPILE_KERNELS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_swing_unit_weights_equal_unweighted_and_lower_weights_lower_similarity(toy) -> None:
    plain = Swing(k=5, progress=False).fit(toy)
    ones = Swing(k=5, progress=False).fit(toy, weights=np.ones(len(toy), np.float32))
    np.testing.assert_allclose(ones.neighbor_scores_, plain.neighbor_scores_, rtol=1e-6)
    w = np.ones(len(toy), np.float32)
    w[0] = 0.5  # a's i0
    assert _sim(Swing(k=5, progress=False).fit(toy, weights=w), 0, 1) == pytest.approx(0.5 * _sim(plain, 0, 1))
