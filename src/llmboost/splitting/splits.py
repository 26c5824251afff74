"""Splitting interactions into train, validation and test.

* :func:`leave_one_out` — per user, by time: last event is test, second-last validation (SASRec, TIGER).
* :func:`temporal_split` — global cut-offs in time: the latest events are test.
* :func:`random_split` — events assigned at random in given ratios (seeded).

Documented treatments (each logged with counts in ``Split.log``): validation/test events whose item never
occurs in training are dropped (nothing can be learned for them; ``keep_unseen_items=True`` keeps them),
as are validation/test events of users with no training history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from llmboost.data.dataset import Dataset
from llmboost.data.interactions import Interactions

if TYPE_CHECKING:
    from llmboost.data.text import ItemText

logger = logging.getLogger(__name__)

Stage = Literal["valid", "test"]


@dataclass(eq=False)
class Split:
    """Train, validation and test interactions over one dataset's id spaces."""

    train: Interactions
    valid: Interactions
    test: Interactions
    strategy: str
    log: list[str] = field(default_factory=list)
    dataset: Dataset | None = field(default=None, repr=False)
    """The dataset it was split from (for item text and metadata); ``None`` after :meth:`load`."""

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    def targets(self, stage: Stage) -> Interactions:
        """The held-out events evaluated at ``stage``."""
        return self.valid if stage == "valid" else self.test

    def history(self, stage: Stage) -> Interactions:
        """What a model may condition on and must not recommend again at ``stage``:
        training events for validation, training plus validation events for test."""
        return self.train if stage == "valid" else Interactions.concat([self.train, self.valid])

    def item_text(self, fields: Sequence[str] = ("title",), max_chars: int | None = None, **options: Any) -> ItemText:
        """The dataset's item text (see :meth:`Dataset.item_text`); needs :attr:`dataset`."""
        if self.dataset is None:
            raise ValueError(
                "this split carries no dataset (a split read with Split.load); use dataset.item_text(...) "
                "on the dataset it was made from"
            )
        return self.dataset.item_text(fields, max_chars, **options)

    def save(self, path: str | Path) -> Path:
        """Write train/valid/test as Parquet plus ``split.json`` (the dataset is not saved with it)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for part in ("train", "valid", "test"):
            getattr(self, part).frame.to_parquet(path / f"{part}.parquet", index=False)
        meta = {"strategy": self.strategy, "n_users": self.n_users, "n_items": self.n_items, "log": self.log}
        (path / "split.json").write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        path = Path(path)
        meta = json.loads((path / "split.json").read_text())
        parts = {
            part: Interactions.from_frame(pd.read_parquet(path / f"{part}.parquet"), meta["n_users"], meta["n_items"])
            for part in ("train", "valid", "test")
        }
        return cls(**parts, strategy=meta["strategy"], log=list(meta["log"]))

    def describe(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            **{f"{p}_events": len(getattr(self, p)) for p in ("train", "valid", "test")},
            "valid_users": len(self.valid.active_users()),
            "test_users": len(self.test.active_users()),
            "log": self.log,
        }


def leave_one_out(dataset: Dataset, keep_unseen_items: bool = False) -> Split:
    """Per user in time order: the last event is test, the second-last validation, the rest train.

    Users with fewer than three events keep all of them in training (logged)."""
    events = dataset.interactions
    ptr = events.user_ptr
    counts = np.diff(ptr)
    position_from_end = np.repeat(ptr[1:], counts) - np.arange(len(events)) - 1  # 0 = last event
    eligible = np.repeat(counts >= 3, counts)
    role = np.where(eligible & (position_from_end == 0), 2, np.where(eligible & (position_from_end == 1), 1, 0))
    log = []
    short = int((counts < 3).sum() - (counts == 0).sum())
    if short:
        log.append(f"{short} users with fewer than 3 events kept all of them in training")
    return _finish(dataset, role, "leave_one_out", log, keep_unseen_items)


def temporal_split(
    dataset: Dataset, valid_fraction: float = 0.1, test_fraction: float = 0.1, keep_unseen_items: bool = False
) -> Split:
    """Global time cut-offs: the latest ``test_fraction`` of events is test, the ``valid_fraction``
    before it validation. Events at a cut-off timestamp all go to the later part."""
    _check_fractions(valid_fraction, test_fraction)
    events = dataset.interactions
    ts = events.timestamps
    test_cut = np.quantile(ts, 1.0 - test_fraction, method="higher")
    valid_cut = np.quantile(ts, 1.0 - test_fraction - valid_fraction, method="higher")
    role = np.where(ts >= test_cut, 2, np.where(ts >= valid_cut, 1, 0))
    log = [f"validation from t={int(valid_cut)}, test from t={int(test_cut)}"]
    return _finish(dataset, role, "temporal", log, keep_unseen_items)


def random_split(
    dataset: Dataset,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    keep_unseen_items: bool = False,
) -> Split:
    """Each event goes to validation or test with the given probabilities (seeded), else to train."""
    _check_fractions(valid_fraction, test_fraction)
    draw = np.random.default_rng(seed).random(len(dataset.interactions))
    role = np.where(draw < test_fraction, 2, np.where(draw < test_fraction + valid_fraction, 1, 0))
    return _finish(dataset, role, f"random(seed={seed})", [], keep_unseen_items)


def split_dataset(dataset: Dataset, strategy: str = "leave_one_out", **options: object) -> Split:
    """Split by strategy name: ``leave_one_out``, ``temporal`` or ``random``."""
    strategies = {"leave_one_out": leave_one_out, "temporal": temporal_split, "random": random_split}
    if strategy not in strategies:
        raise ValueError(f"unknown split strategy {strategy!r}; choose one of {sorted(strategies)}")
    return strategies[strategy](dataset, **options)  # type: ignore[operator]


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    if not (0 <= valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions: valid={valid_fraction}, test={test_fraction}")


def _finish(dataset: Dataset, role: np.ndarray, strategy: str, log: list[str], keep_unseen: bool) -> Split:
    events = dataset.interactions
    train = events.select(role == 0)
    in_train_items = train.item_counts() > 0
    in_train_users = train.user_counts() > 0
    parts = []
    for code, name in ((1, "validation"), (2, "test")):
        part = events.select(role == code)
        no_user = ~in_train_users[part.users]
        if no_user.any():
            log.append(f"dropped {int(no_user.sum())} {name} events of users with no training history")
        keep = ~no_user
        if not keep_unseen:
            unseen = keep & ~in_train_items[part.items]
            if unseen.any():
                log.append(f"dropped {int(unseen.sum())} {name} events on items never seen in training")
            keep &= ~unseen
        parts.append(part.select(keep))
    for line in log:
        logger.info("%s split: %s", strategy, line)
    return Split(train, parts[0], parts[1], strategy, log, dataset)
