"""``llmboost i2i run [config] [key=value ...]``."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("i2i")
def i2i() -> None:
    """LLM-I2I: an LLM generator and discriminator refine the data of item-to-item models (arXiv 2512.21595)."""


@i2i.command("run")
@click.argument("config", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="output folder")
@click.option("--no-progress", is_flag=True)
def run(config: str | None, overrides: tuple[str, ...], out_dir: Path | None, no_progress: bool) -> None:
    """Run a preset (quick / cpu / full) or a config file, with key=value overrides."""
    from llmboost.config import ConfigError
    from llmboost.methods.llm_i2i.config import load
    from llmboost.methods.llm_i2i.experiment import run_experiment

    if config is not None and "=" in config:
        overrides, config = (config, *overrides), None
    try:
        cfg = load(config, list(overrides))
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    out_dir = out_dir or Path("runs") / f"llm_i2i-{config or 'cpu'}"
    results = run_experiment(cfg, out_dir, progress=not no_progress)
    click.echo(f"wrote {out_dir / 'report.md'}")
    for key, value in results["headline"].items():
        click.echo(f"  {key}: {value:.4f}")
