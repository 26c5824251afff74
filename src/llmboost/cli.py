"""The ``llmboost`` command line: data tools, training and evaluation.

Examples::

    llmboost train                                  # SASRec on MovieLens-100K, the built-in default
    llmboost train configs/beauty-sasrec.yaml seeds=[0,1,2] model.params.hidden=128
    llmboost evaluate runs/movielens-100k-sasrec
    llmboost plot runs/movielens-100k-sasrec         # curves.png and slices.png in the run folder
    llmboost data describe ../shared/datasets/amazon-beauty
    llmboost data split movielens-100k out/ml100k-loo --strategy leave_one_out
    llmboost env                                    # precision auto picks here (and why), extras, models
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from llmboost import __version__


def _options_help() -> str:
    from llmboost.config import describe_options

    lines = ["\b", "Configuration keys (set in the file or as KEY=VALUE):"]
    lines += [f"  {key:<34} {default:<18} {text}" for key, default, text in describe_options()]
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="llmboost")
@click.option("-v", "--verbose", count=True, help="Log more (-v: info, -vv: debug).")
def main(verbose: int) -> None:
    """llmboost: make small, cheap recommenders better with what large language models know."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Inspect, convert and split datasets."""


def _load(source: str, fmt: str | None, columns: str | None = None):
    from llmboost.data import load_dataset
    from llmboost.data.loaders import column_options

    try:
        return load_dataset(source, format=fmt, **column_options(columns))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc


_format_option = click.option(
    "--format", "fmt", default=None, help="Loader to use (guessed from the files when omitted)."
)
_columns_option = click.option(
    "--columns",
    default=None,
    metavar="ROLE=COL,...",
    help="Columns of a CSV/TSV/Parquet table, e.g. user=customer,item=sku,timestamp=when,rating= "
    "(empty: none). Unnamed ones are recognised: user_id, userId, reviewerID, item_id, movieId, asin, "
    "timestamp, unixReviewTime, date, rating, overall, ...",
)


@data.command("describe")
@click.argument("source")
@_format_option
@_columns_option
def data_describe(source: str, fmt: str | None, columns: str | None) -> None:
    """Print statistics of SOURCE (a built-in dataset name, a folder or a file) as JSON."""
    click.echo(json.dumps(_load(source, fmt, columns).describe(), indent=2))


@data.command("convert")
@click.argument("source")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@_format_option
@_columns_option
def data_convert(source: str, output: Path, fmt: str | None, columns: str | None) -> None:
    """Parse SOURCE and write it to OUTPUT as llmboost's Parquet dataset folder."""
    dataset = _load(source, fmt, columns)
    dataset.save(output)
    click.echo(f"wrote {dataset!r} to {output}")


@data.command("split")
@click.argument("source")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@_format_option
@_columns_option
@click.option(
    "--strategy", type=click.Choice(["leave_one_out", "temporal", "random"]), default="leave_one_out", show_default=True
)
@click.option("--valid-fraction", type=float, default=0.1, show_default=True, help="temporal/random only.")
@click.option("--test-fraction", type=float, default=0.1, show_default=True, help="temporal/random only.")
@click.option("--seed", type=int, default=0, show_default=True, help="random only.")
@click.option("--kcore", type=int, default=0, show_default=True, help="Apply a k-core filter first (0 = off).")
def data_split(
    source: str,
    output: Path,
    fmt: str | None,
    columns: str | None,
    strategy: str,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
    kcore: int,
) -> None:
    """Split SOURCE into train/valid/test Parquet files in OUTPUT."""
    from llmboost.data.filters import kcore as kcore_filter
    from llmboost.splitting import split_dataset

    dataset = _load(source, fmt, columns)
    if kcore:
        dataset = kcore_filter(dataset, kcore, kcore)
    options: dict[str, object] = {}
    if strategy != "leave_one_out":
        options = {"valid_fraction": valid_fraction, "test_fraction": test_fraction}
    if strategy == "random":
        options["seed"] = seed
    split = split_dataset(dataset, strategy, **options)
    split.save(output)
    dataset.save(output / "dataset")
    click.echo(json.dumps(split.describe(), indent=2))


# ---------------------------------------------------------------------------- train / evaluate
@main.command(epilog=_options_help())
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option(
    "--force",
    is_flag=True,
    help="The run folder holds finished seeds of another configuration or other data: delete them and train "
    "again (without --force this is refused; name=<new name> keeps both).",
)
def train(config: Path | None, overrides: tuple[str, ...], no_progress: bool, force: bool) -> None:
    """Train and evaluate a recommender.

    CONFIG is a YAML or TOML file (optional: the default trains SASRec on MovieLens-100K).
    OVERRIDES are KEY=VALUE pairs, e.g. model.name=bprmf seeds=[0,1,2].
    A first argument containing '=' is taken as an override.

    Results go to output_dir/name (default name: <data>-<model>). Seeds already finished there are reused
    only when the folder was made by the same configuration (all keys but seeds, output_dir, name, threads)
    on the same data; a changed configuration is a new run: use another name=, or --force.
    """
    from llmboost.config import ConfigError, load_config
    from llmboost.runs import model_params, train_and_evaluate

    if config is not None and "=" in str(config) and not config.exists():
        overrides, config = (str(config), *overrides), None
    try:
        run_config = load_config(config, list(overrides))
        model_params(run_config)  # wrong-typed or unknown model.params fail here, naming the key
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        out = train_and_evaluate(run_config, progress=not no_progress, force=force)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_metrics(json.loads((out / "metrics.json").read_text()))
    click.echo(f"results in {out}")


@main.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--stage", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("-k", "ks", type=int, multiple=True, help="Cut-offs (repeatable); default: the run's.")
def evaluate(run: Path, stage: str, ks: tuple[int, ...]) -> None:
    """Re-evaluate the saved models of RUN (a folder written by `llmboost train`)."""
    from llmboost.runs import evaluate_run

    try:
        result = evaluate_run(run, stage, list(ks) or None)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_metrics(result)


@main.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--metric", default="NDCG@10", show_default=True, help="Metric shown per slice.")
def plot(run: Path, metric: str) -> None:
    """Draw RUN's training curves and per-slice metrics as PNG files in the run folder."""
    from llmboost._optional import MissingExtraError
    from llmboost.plots import plot_run

    try:
        for path in plot_run(run, metric):
            click.echo(f"wrote {path}")
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("overrides", nargs=-1)
@click.option(
    "--preset",
    type=click.Choice(["quick", "cpu", "full"]),
    default="quick",
    show_default=True,
    help="quick: 2 CPU cores, under 20 min; cpu: each method's CPU configuration; full: paper scale (GPU).",
)
@click.option("--only", default=None, help="Comma-separated subset, e.g. sllmr,cemg (default: all four).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: reports/<preset>).",
)
@click.option("--mlflow/--no-mlflow", "mlflow", default=None, help="Log each stage to MLflow (default: if installed).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def reproduce(
    overrides: tuple[str, ...],
    preset: str,
    only: str | None,
    out_dir: Path | None,
    mlflow: bool | None,
    no_progress: bool,
) -> None:
    """Run S-LLMR, LLM-I2I, CEMG and the hallucination-detector ensemble; write one report.

    OVERRIDES are METHOD.KEY=VALUE pairs applied to that method's preset, e.g.
    sllmr.seeds=[0,1,2] cemg.data.source=path/to/data llm_i2i.llm.model=http://localhost:8000/v1.
    Finished stages with unchanged settings are reused; a failed stage is rerun by the same command.
    """
    from llmboost.config import ConfigError
    from llmboost.reproduce import ReproduceError
    from llmboost.reproduce import reproduce as run_reproduce

    try:
        out = run_reproduce(
            out_dir or Path("reports") / preset,
            preset,
            only,
            overrides,
            progress=not no_progress,
            mlflow=mlflow,
            echo=click.echo,
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    except ReproduceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"results in {out}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def env(as_json: bool) -> None:
    """What this machine gives llmboost: versions, the precision `auto` picks and why, extras, built-in models."""
    from llmboost.environment import describe_environment, format_environment

    info = describe_environment()
    click.echo(json.dumps(info, indent=2) if as_json else format_environment(info))


def _print_metrics(result: dict) -> None:
    seeds = result["seeds"]
    click.echo(f"metrics over {len(seeds)} seed(s) {seeds}: mean ± std")
    for name, stats in result["metrics"].items():
        if name.endswith("users") or name.endswith("seconds"):
            continue
        click.echo(f"  {name:<24} {stats['mean']:.4f} ± {stats['std']:.4f}")


def _add_method_commands() -> None:
    """Each method's click group (``llmboost sllmr|i2i|cemg|hallucination ...``)."""
    import importlib

    for module, group in (
        ("llmboost.methods.sllmr.cli", "sllmr"),
        ("llmboost.methods.llm_i2i.cli", "i2i"),
        ("llmboost.methods.cemg.cli", "cemg"),
        ("llmboost.methods.hallucination.cli", "hallucination"),
    ):
        main.add_command(getattr(importlib.import_module(module), group))


_add_method_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
