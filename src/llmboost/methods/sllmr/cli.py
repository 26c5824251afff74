"""``llmboost sllmr``: run the S-LLMR experiment (``llmboost sllmr run cpu lam=0.2``)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("sllmr")
def sllmr() -> None:
    """S-LLMR: selective LLM-guided regularization of a recommender (arXiv 2512.21526)."""


@sllmr.command("run")
@click.argument("config", required=False, default="quick")
@click.argument("overrides", nargs=-1)
@click.option("--out", "out_dir", default=None, help="Output folder (default runs/sllmr-<preset or file stem>).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(config: str, overrides: tuple[str, ...], out_dir: str | None, quiet: bool) -> None:
    """Run CONFIG (a preset quick|cpu|full or a YAML/TOML file) with KEY=VALUE overrides."""
    from llmboost.config import ConfigError
    from llmboost.methods.sllmr.config import load_config
    from llmboost.methods.sllmr.experiment import run_experiment
    from llmboost.methods.sllmr.teachers import SupervisionError

    if "=" in config:  # only overrides were given
        overrides, config = (config, *overrides), "quick"
    try:
        cfg = load_config(config, list(overrides))
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    out = Path(out_dir or f"runs/sllmr-{Path(config).stem}")
    try:
        results = run_experiment(cfg, out, progress=not quiet)
    except SupervisionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(results["headline"], indent=2))
    click.echo(f"report: {out / 'report.md'}")
