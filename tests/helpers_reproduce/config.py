"""A stand-in method package for the reproduce tests: a config with presets."""

from dataclasses import dataclass, field


@dataclass
class FakeConfig:
    size: int = 3
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    fail: bool = False
    torch_threads: int = 0  #: > 0: the stage sets torch's thread count (as a method may)


def preset(name: str) -> FakeConfig:
    presets = {"quick": FakeConfig(), "cpu": FakeConfig(size=10), "full": FakeConfig(size=100)}
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}")
    return presets[name]
