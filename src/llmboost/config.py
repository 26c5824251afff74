"""Typed run configurations: dataclasses loaded from YAML or TOML, overridden with ``key=value``.

``load_config("run.yaml", ["model.name=bprmf", "seeds=[0,1,2]"])`` reads the file, applies each
override (values parsed as YAML, dotted keys address nested sections) and checks every key and type,
so a typo fails with the valid keys listed instead of being silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    """Where the data comes from and how it is filtered."""

    source: str = "movielens-100k"  #: built-in name or path to a file/folder
    format: str | None = None  #: loader to use; guessed from the files when None
    columns: dict[str, str | None] = field(default_factory=dict)  #: table columns {user,item,timestamp,rating: name}
    min_rating: float | None = None  #: keep only events rated at least this
    kcore: int = 0  #: keep the k-core (every user and item with >= k events); 0 = off


@dataclass
class SplitConfig:
    """How interactions are divided into train, validation and test."""

    strategy: str = "leave_one_out"  #: leave_one_out | temporal | random
    valid_fraction: float = 0.1  #: temporal/random only
    test_fraction: float = 0.1  #: temporal/random only
    keep_unseen_items: bool = False  #: keep held-out events on items never trained on


@dataclass
class SliceConfig:
    """The cold-start-user and long-tail-item slices reported beside every metric."""

    cold_user_max_history: int | None = None  #: cold users have at most this many training events
    cold_user_fraction: float = 0.2  #: else: the shortest-history fraction of users
    head_fraction: float = 0.2  #: the most popular fraction of items is the head; the rest is the tail


@dataclass
class ModelConfig:
    """Which recommender to train and its hyperparameters."""

    name: str = "sasrec"  #: sasrec | bprmf | popular
    params: dict[str, Any] = field(default_factory=dict)  #: constructor arguments of the model


@dataclass
class EvaluationConfig:
    """Full-ranking evaluation settings."""

    ks: list[int] = field(default_factory=lambda: [10, 20])  #: cut-offs for HR/Recall/NDCG/Coverage
    batch_size: int = 1024  #: users scored at once


@dataclass
class RunConfig:
    """One experiment: data, split, slices, model, evaluation, seeds and where results go."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    slices: SliceConfig = field(default_factory=SliceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seeds: list[int] = field(default_factory=lambda: [0])  #: one training run per seed
    output_dir: str = "runs"  #: runs are written to output_dir/name
    name: str | None = None  #: run folder name; default: <data>-<model>
    threads: int | None = None  #: torch CPU threads; None = torch's default


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML/TOML file (or start from defaults), apply ``key=value`` overrides, validate."""
    raw = read_config_file(path) if path is not None else {}
    apply_overrides(raw, overrides)
    return from_mapping(RunConfig, raw)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML, TOML or JSON file (by suffix; YAML otherwise); errors name the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix == ".json":
            raw = json.loads(text)
        else:
            raw = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, not {type(raw).__name__}")
    return raw


def apply_overrides(
    raw: dict[str, Any], overrides: list[str] | tuple[str, ...], example: str = "model.name=bprmf"
) -> dict[str, Any]:
    """Set each ``key=value`` (value parsed as YAML, dotted keys address nested sections) in ``raw``;
    ``example`` is the override shown in the error for a malformed one."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. {example})")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    return raw


def merge_mapping(base: dict[str, Any], new: dict[str, Any], atomic: Collection[str] = ()) -> dict[str, Any]:
    """Merge ``new`` into ``base`` section by section (nested mappings merge; other values, and mappings under
    the keys in ``atomic`` such as free-form parameter dicts, replace). Values are copied. Returns ``base``."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in atomic:
            merge_mapping(base[key], value, atomic)
        else:
            base[key] = copy.deepcopy(value)
    return base


def from_mapping(cls: type[Any], mapping: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, checking keys and basic types."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, not {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])!r}; valid keys here: {sorted(fields)}")
    values = {}
    for name, value in mapping.items():
        hint = hints[name]
        key = _join(where, name)
        if dataclasses.is_dataclass(hint):
            values[name] = from_mapping(hint, value, key)  # type: ignore[arg-type]
        else:
            values[name] = check_type(value, hint, key)
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config (for writing YAML/JSON)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def describe_options(cls: type[Any] = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every option, from the dataclasses and their ``#:`` comments."""
    import inspect

    source = inspect.getsource(cls)
    comments = {}
    for line in source.splitlines():
        name, _, rest = line.strip().partition(":")
        if "#:" in rest:
            comments[name] = rest.split("#:", 1)[1].strip()
    rows = []
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe_options(hints[f.name], key)  # type: ignore[arg-type]
        else:
            rows.append((key, repr(getattr(default, f.name)), comments.get(f.name, "")))
    return rows


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def check_type(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against type ``hint`` (ints widen to float, numeric strings such as ``"1e-3"`` are read
    as floats); a mismatch is a :class:`ConfigError` naming ``key`` and the expected type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_type(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, not {value!r}")
        return [check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, not {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{key} must be {hint.__name__}, not {value!r}")
    return value


_check_type = check_type  # the former private name


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
