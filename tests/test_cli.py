"""The command line: train/evaluate runs that reproduce, data tools, errors that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from llmboost.cli import main
from tests.factories import cyclic_sequences


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory) -> Path:
    return cyclic_sequences(80, 15, 8).save(tmp_path_factory.mktemp("data") / "cyclic")


def _invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def _train_args(source: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        f"data.source={source}",
        f"output_dir={out}",
        "name=run",
        "model.name=sasrec",
        "model.params={hidden: 16, layers: 1, heads: 1, epochs: 3, max_len: 10}",
        "--no-progress",
        *extra,
    ]


def test_train_writes_a_reproducible_run(saved_dataset: Path, tmp_path: Path) -> None:
    result = _invoke(*_train_args(saved_dataset, tmp_path, "seeds=[0,1]"))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seeds"] == [0, 1] and config["model"]["params"]["hidden"] == 16
    record = json.loads((run / "run.json").read_text())
    assert len(record["data_fingerprint"]) == 16 and record["reproduce"].startswith("llmboost train")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["NDCG@10"]["n"] == 2 and metrics["NDCG@10"]["std"] >= 0
    assert {"cold_users/NDCG@10", "long_tail/NDCG@10", "Coverage@10"} <= set(metrics)
    for seed in (0, 1):
        assert (run / f"seed-{seed}" / "model.pt").exists()
        assert (run / f"seed-{seed}" / "per_user.parquet").exists()
    assert "NDCG@10" in result.output and "±" in result.output

    # Re-evaluating the saved models gives the recorded numbers.
    evaluated = _invoke("evaluate", str(run))
    assert evaluated.exit_code == 0
    line = next(x for x in evaluated.output.splitlines() if x.strip().startswith("NDCG@10"))
    assert f"{metrics['NDCG@10']['mean']:.4f}" in line

    # The one-command reproduction from the saved config gives the same numbers (finished seeds are reused,
    # so remove them to force retraining).
    for seed in (0, 1):
        (run / f"seed-{seed}" / "summary.json").unlink()
    again = _invoke("train", str(run / "config.yaml"), "--no-progress")
    assert again.exit_code == 0
    rerun = json.loads((run / "metrics.json").read_text())["metrics"]
    assert rerun["NDCG@10"]["mean"] == pytest.approx(metrics["NDCG@10"]["mean"], abs=1e-9)


def test_stopped_run_resumes_finished_seeds(saved_dataset: Path, tmp_path: Path) -> None:
    assert _invoke(*_train_args(saved_dataset, tmp_path, "seeds=[0]")).exit_code == 0
    summary = tmp_path / "run" / "seed-0" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    result = _invoke(*_train_args(saved_dataset, tmp_path, "seeds=[0,1]"))
    assert result.exit_code == 0
    assert summary.stat().st_mtime_ns == stamp  # seed 0 was not retrained
    assert (tmp_path / "run" / "seed-1" / "summary.json").exists()


def test_bad_override_names_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "model.nmae=x"])
    assert result.exit_code == 2 and "model.nmae" in result.output
    result = CliRunner().invoke(main, ["train", "data.source=/nonexistent/place", f"output_dir={tmp_path}"])
    assert result.exit_code == 1 and "/nonexistent/place" in result.output


def test_unknown_model_parameter_is_reported(saved_dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["train", f"data.source={saved_dataset}", f"output_dir={tmp_path}", "model.params={hiden: 3}"]
    )
    assert result.exit_code == 1 and "hiden" in result.output


def test_help_lists_every_option() -> None:
    result = _invoke("train", "--help")
    assert "model.params" in result.output and "slices.head_fraction" in result.output


def test_data_describe_convert_split(saved_dataset: Path, tmp_path: Path) -> None:
    described = json.loads(_invoke("data", "describe", str(saved_dataset)).output)
    assert described["users"] == 80 and described["interactions"] == 640
    assert _invoke("data", "convert", str(saved_dataset), str(tmp_path / "copy")).exit_code == 0
    assert (
        json.loads(_invoke("data", "describe", str(tmp_path / "copy")).output)["fingerprint"]
        == described["fingerprint"]
    )
    split = _invoke("data", "split", str(saved_dataset), str(tmp_path / "split"), "--strategy", "temporal")
    assert split.exit_code == 0, split.output
    assert json.loads(split.output)["strategy"] == "temporal"
    assert (tmp_path / "split" / "train.parquet").exists()


def test_plot_writes_pngs(saved_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert _invoke(*_train_args(saved_dataset, tmp_path)).exit_code == 0
    result = _invoke("plot", str(tmp_path / "run"))
    assert result.exit_code == 0
    for name in ("curves.png", "slices.png"):
        assert (tmp_path / "run" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_user_csv(path: Path) -> Path:
    """A table as a user exports it: snake_case ids, ISO dates, a rating, an extra column."""
    rows = ["user_id,item_id,rating,timestamp,device"]
    for u in range(12):
        for k in range(6):
            rows.append(f"user{u},item{(u + k) % 9},{1 + (u + k) % 5},2024-03-{1 + k:02d}T10:{u:02d}:00Z,web")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_users_own_csv_through_the_data_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBOOST_CACHE", str(tmp_path / "cache"))
    csv = _write_user_csv(tmp_path / "my_events.csv")
    described = _invoke("data", "describe", str(csv))
    assert described.exit_code == 0, described.output
    stats = json.loads(described.output)
    assert (stats["users"], stats["items"], stats["interactions"]) == (12, 9, 72) and stats["has_ratings"]
    assert stats["timestamp_range"] == [1709287200, 1709719860]  # 2024-03-01T10:00Z .. 2024-03-06T10:11Z

    renamed = tmp_path / "renamed.csv"
    renamed.write_text(csv.read_text().replace("user_id,item_id,rating,timestamp", "who,what,stars,when"))
    failed = CliRunner().invoke(main, ["data", "describe", str(renamed)])
    assert failed.exit_code == 1 and "no user column" in failed.output and "--columns user=COLUMN" in failed.output
    named = _invoke("data", "describe", str(renamed), "--columns", "user=who,item=what,timestamp=when,rating=stars")
    assert named.exit_code == 0, named.output
    assert json.loads(named.output)["fingerprint"] == stats["fingerprint"]

    assert (
        _invoke(
            "data",
            "convert",
            str(renamed),
            str(tmp_path / "conv"),
            "--columns",
            "user=who,item=what,timestamp=when,rating=stars",
        ).exit_code
        == 0
    )
    split = _invoke("data", "split", str(csv), str(tmp_path / "split"), "--columns", "rating=")
    assert split.exit_code == 0, split.output
    assert json.loads(split.output)["test_events"] == 12
    bad = CliRunner().invoke(main, ["data", "describe", str(csv), "--columns", "usr=x"])
    assert bad.exit_code == 1 and "unknown role 'usr'" in bad.output


def test_train_on_own_csv_with_columns_in_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBOOST_CACHE", str(tmp_path / "cache"))
    csv = tmp_path / "renamed.csv"
    csv.write_text(_write_user_csv(tmp_path / "e.csv").read_text().replace("user_id,item_id", "who,what"))
    result = _invoke(
        "train",
        f"data.source={csv}",
        "data.columns={user: who, item: what}",
        f"output_dir={tmp_path}",
        "name=own",
        "model.name=popular",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "own" / "run.json").read_text())
    assert record["dataset"]["users"] == 12 and record["config"]["data"]["columns"] == {"user": "who", "item": "what"}


def test_changed_config_is_a_new_run(saved_dataset: Path, tmp_path: Path) -> None:
    assert _invoke(*_train_args(saved_dataset, tmp_path)).exit_code == 0
    run = tmp_path / "run"
    record = json.loads((run / "run.json").read_text())
    resolved = record["resolved_config"]["model"]["params"]
    assert len(record["config_hash"]) == 16 and resolved["hidden"] == 16 and "lr" in resolved  # defaults filled in
    summary = run / "seed-0" / "summary.json"
    stamp = summary.stat().st_mtime_ns

    # Same configuration with defaults spelled out, more seeds, other threads: the same run, seed 0 reused.
    threads = torch.get_num_threads()
    try:
        same = _invoke(
            *_train_args(saved_dataset, tmp_path, f"model.params.lr={resolved['lr']}", "seeds=[0,1]", "threads=1")
        )
    finally:
        torch.set_num_threads(threads)
    assert same.exit_code == 0, same.output
    assert summary.stat().st_mtime_ns == stamp
    assert json.loads((run / "run.json").read_text())["config_hash"] == record["config_hash"]

    # A changed hyperparameter: refused, naming the change and how to go on.
    changed = CliRunner().invoke(main, _train_args(saved_dataset, tmp_path, "model.params.dropout=0.125"))
    assert changed.exit_code == 1
    assert f"model.params.dropout: {resolved['dropout']!r} -> 0.125" in changed.output
    assert "--force" in changed.output and "name=" in changed.output
    assert summary.stat().st_mtime_ns == stamp
    # Another split is another run too.
    other_split = CliRunner().invoke(main, _train_args(saved_dataset, tmp_path, "split.strategy=temporal"))
    assert other_split.exit_code == 1 and "split.strategy: 'leave_one_out' -> 'temporal'" in other_split.output

    # --force deletes the old seeds and trains again; the folder now records the new configuration.
    forced = _invoke(*_train_args(saved_dataset, tmp_path, "model.params.dropout=0.125", "--force"))
    assert forced.exit_code == 0, forced.output
    assert not (run / "seed-1").exists() and summary.stat().st_mtime_ns != stamp
    assert json.loads((run / "run.json").read_text())["config_hash"] != record["config_hash"]


def test_changed_data_is_a_new_run(tmp_path: Path) -> None:
    first = cyclic_sequences(40, 10, 6, seed=0).save(tmp_path / "data")
    args = [
        "train",
        f"data.source={first}",
        f"output_dir={tmp_path}",
        "name=run",
        "model.name=popular",
        "--no-progress",
    ]
    assert _invoke(*args).exit_code == 0
    cyclic_sequences(40, 10, 6, seed=1).save(tmp_path / "data")  # same path, other content
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "data fingerprint" in result.output


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.params={hidden: abc}", "model.params.hidden (of model 'sasrec') must be int, not 'abc'"),
        ("model.params.epochs=2.5", "model.params.epochs (of model 'sasrec') must be int, not 2.5"),
        ("model.params.dropout=[0.1]", "model.params.dropout (of model 'sasrec') must be float, not [0.1]"),
    ],
)
def test_wrong_typed_model_params_name_the_key(
    saved_dataset: Path, tmp_path: Path, override: str, expected: str
) -> None:
    result = CliRunner().invoke(main, ["train", f"data.source={saved_dataset}", f"output_dir={tmp_path}", override])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_float_model_params_accept_yaml_exponents(saved_dataset: Path, tmp_path: Path) -> None:
    from llmboost.config import load_config
    from llmboost.runs import model_params

    params = model_params(load_config(None, ["model.params={lr: 1e-3, dropout: 0}"]))  # YAML: "1e-3" is a string
    assert params["lr"] == 0.001 and params["dropout"] == 0.0 and isinstance(params["hidden"], int)
