"""``llmboost hallucination ...``: run the detector-ensemble experiment, score answers with a saved ensemble."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("hallucination")
def hallucination() -> None:
    """Hallucination detectors on a model's internal representations (arXiv 2510.14330)."""


@hallucination.command("run")
@click.argument("config", required=False)
@click.argument("overrides", nargs=-1)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default runs/hallucination-<preset>).",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def run(config: str | None, overrides: tuple[str, ...], out_dir: Path | None, no_progress: bool) -> None:
    """Run (or resume) the experiment. CONFIG is a preset (quick, cpu, full) or a YAML/TOML file; then key=value
    overrides (e.g. data.n_geonames=200 split.seeds=[0,1])."""
    from llmboost.config import ConfigError
    from llmboost.methods.hallucination.config import load
    from llmboost.methods.hallucination.experiment import run_experiment

    if config is not None and "=" in config:
        overrides = (config, *overrides)
        config = None
    try:
        cfg = load(config, list(overrides))
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    out = out_dir or Path("runs") / f"hallucination-{cfg.preset}"
    result = run_experiment(cfg, out, progress=not no_progress)
    for name, value in result["headline"].items():
        click.echo(f"{name:<32} {value:.4f}")
    click.echo(f"report: {out / 'report.md'}")


@hallucination.command("score")
@click.argument("ensemble_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("prompts", nargs=-1, required=True)
@click.option("--model", "model_name", default="smollm2-135m-instruct", show_default=True)
@click.option("--max-new-tokens", default=12, show_default=True)
def score(ensemble_dir: Path, prompts: tuple[str, ...], model_name: str, max_new_tokens: int) -> None:
    """Answer PROMPTS with MODEL and print each answer's reliability score P(correct) from a saved ensemble."""
    from llmboost.llm import load_model
    from llmboost.llm.tracing import trace_generation
    from llmboost.methods.hallucination.ensemble import DetectorEnsemble
    from llmboost.methods.hallucination.features import Features

    model = load_model(model_name)
    try:
        ens = DetectorEnsemble.load(ensemble_dir, model.fingerprint)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    tr = trace_generation(model, list(prompts), max_new_tokens=max_new_tokens, stop=["\n"])
    p = ens.predict_proba(Features.from_trace(tr))
    t = ens.abstain_threshold_
    for text, pi in zip(tr.texts, p, strict=True):
        shown = text.strip() if t is None or pi >= t else "I don't know"
        click.echo(f"{pi:.3f}\t{shown}\t(raw: {text.strip()!r})")
