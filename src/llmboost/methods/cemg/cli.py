"""``llmboost cemg``: run the CEMG experiment, inspect a semantic-ID table."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("cemg")
def cemg() -> None:
    """CEMG: collaborative-guided multimodal fusion, RQ-VAE semantic IDs, generative recommendation."""


@cemg.command("run")
@click.argument("config", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--out", "out_dir", default=None, help="Output folder (default runs/cemg-<preset or file stem>).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(config: str | None, overrides: tuple[str, ...], out_dir: str | None, quiet: bool) -> None:
    """Run the experiment. CONFIG is a preset (quick | cpu | full) or a YAML/TOML file; then KEY=VALUE
    overrides, e.g. ``llmboost cemg run quick seeds=[0] rqvae.epochs=20``."""
    from llmboost.config import ConfigError
    from llmboost.methods.cemg.config import load_config
    from llmboost.methods.cemg.experiment import run_experiment

    if config is not None and "=" in config:
        overrides = (config, *overrides)
        config = None
    try:
        cfg = load_config(config, list(overrides))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    out = Path(out_dir or f"runs/cemg-{Path(config).stem if config else 'cpu'}")
    results = run_experiment(cfg, out, progress=not quiet)
    click.echo(f"report: {out / 'report.md'}")
    click.echo(json.dumps(results["headline"], indent=2))


@cemg.command("ids")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def ids(folder: str) -> None:
    """Show a saved semantic-ID table's version, fingerprint and codebook statistics."""
    from llmboost.methods.cemg.semantic_ids import SemanticIDs

    table = SemanticIDs.load(folder)
    click.echo(
        json.dumps(
            {"fingerprint": table.fingerprint(), "items": table.n_items, "sizes": table.sizes, "stats": table.stats},
            indent=2,
        )
    )
