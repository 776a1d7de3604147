"""tools/summarize.py on hand-written run folders, checked against hand-computed numbers."""
import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "summarize", Path(__file__).resolve().parents[1] / "tools" / "summarize.py"
)
summarize = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(summarize)


def _write_run(root, name, metrics):
    """A run folder holding one metrics.json."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def runs(tmp_path):
    """Three seeds of one method (one lacking abs_rel) and one run of another."""
    for seed, miou, abs_rel in [(0, 50.0, 0.30), (1, 52.0, 0.40), (2, 54.0, None)]:
        metrics = {"semantic": {"mIoU": miou, "acc": 90.0 + seed, "per_class": [1.0, 2.0]},
                   "iteration": 1000, "selected_on": "source_val", "amp": True}
        if abs_rel is not None:
            metrics["depth"] = {"abs_rel": abs_rel}
        _write_run(tmp_path, f"atdt_seed{seed}", metrics)
    _write_run(tmp_path, "baseline-s0", {"semantic": {"mIoU": 38.8, "acc": 80.0}})
    return tmp_path


def _args(*argv):
    """Parse a command line exactly as the CLI would."""
    return summarize.get_args_parser().parse_args([str(a) for a in argv])


def test_mean_and_sample_std(runs, capsys):
    rows = summarize.main(_args("--glob", runs / "*", "--keys", "mIoU", "abs_rel"))
    by_group = {Path(r["group"]).name: r for r in rows}
    assert set(by_group) == {"atdt", "baseline"}
    atdt = by_group["atdt"]
    assert atdt["runs"] == 3
    mean, std, n = atdt["semantic.mIoU"]
    assert (mean, n) == (52.0, 3)
    assert std == pytest.approx(2.0)  # sqrt((4 + 0 + 4) / 2)
    mean, std, n = atdt["depth.abs_rel"]
    assert (mean, n) == (pytest.approx(0.35), 2)
    assert std == pytest.approx(math.sqrt(0.005))  # sqrt((0.05^2 * 2) / 1)
    out = capsys.readouterr().out
    assert "| group | runs | semantic.mIoU | depth.abs_rel |" in out
    # Fixed decimals (2 for a percentage, 3 for an error); (n=K) only where runs are missing.
    assert f"| {Path(by_group['atdt']['group'])} | 3 | 52.00 ± 2.00 | 0.350 ± 0.071 (n=2) |" in out
    assert f"| {Path(by_group['baseline']['group'])} | 1 | 38.80 | - |" in out


def test_flattening_skips_non_numeric_and_per_class(runs):
    rows = summarize.main(_args(runs))
    keys = [k for k in rows[0] if k not in ("group", "runs")]
    assert keys == ["semantic.mIoU", "semantic.acc", "iteration", "depth.abs_rel"]
    rows = summarize.main(_args(runs, "--per-class", "--keys", "per_class"))
    assert rows[0]["semantic.per_class.1"][:2] == (2.0, 0.0)


def test_markdown_and_csv_files(runs, tmp_path):
    md, table = tmp_path / "out" / "t.md", tmp_path / "out" / "t.csv"
    seeds = sorted(runs.glob("*_seed*"))
    summarize.main(_args(*seeds, "--keys", "acc", "--md", md, "--csv", table))
    assert "| 3 | 91.00 ± 1.00 |" in md.read_text()
    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["group", "runs", "semantic.acc_mean", "semantic.acc_std", "semantic.acc_n"]
    assert len(rows) == 2
    assert Path(rows[1][0]).name == "atdt"
    assert rows[1][1:] == ["3", "91.0", "1.0", "3"]


def test_group_by_regex(runs):
    rows = summarize.main(_args(runs, "--group-by-regex", r"(atdt|baseline)_seed[01]"))
    groups = sorted(Path(r["group"]).name for r in rows)
    # seeds 0 and 1 match the regex; unmatched runs stand alone under their own path.
    assert groups == ["atdt", "atdt_seed2", "baseline-s0"]


def test_default_grouping_strips_seed_suffixes():
    assert summarize.group_name("runs/dada_s3_seed1") == "runs/dada_s3"
    assert summarize.group_name("runs/semimtl-m2-s4") == "runs/semimtl-m2"
    assert summarize.group_name("runs/dada_s3") == "runs/dada_s3"  # setup S3, not a seed


def test_error_no_metrics(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no metrics.json found under: .*empty"):
        summarize.main(_args(tmp_path / "empty", tmp_path / "missing"))


def test_error_unknown_key(runs):
    with pytest.raises(SystemExit, match=r"unknown key 'rmse'; available: semantic.mIoU"):
        summarize.main(_args(runs, "--keys", "mIoU", "rmse"))


def test_error_bad_regex(runs):
    with pytest.raises(SystemExit, match=r"invalid --group-by-regex"):
        summarize.main(_args(runs, "--group-by-regex", "(unclosed"))


def test_error_bad_json(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"cannot read .*metrics.json"):
        summarize.main(_args(tmp_path / "run"))


def test_key_matching_uses_whole_parts():
    assert summarize.key_matches("abs_rel", "depth.abs_rel")
    assert summarize.key_matches("semantic", "semantic.mIoU")
    assert summarize.key_matches("depth.abs_rel", "val.depth.abs_rel")
    assert not summarize.key_matches("rel", "depth.abs_rel")


@pytest.mark.parametrize("key, stats, runs, cell", [
    ("target.mIoU", (18.894, 2.7449, 3), 3, "18.89 ± 2.74"),
    ("depth.a1", (56.8, 3.851, 3), 3, "56.80 ± 3.85"),
    ("target.abs_rel", (0.26666, 0.01555, 3), 3, "0.267 ± 0.016"),
    ("rmse", (12.3244, 0.5171, 3), 3, "12.324 ± 0.517"),
    ("normals.median", (7.126, 0.5, 2), 2, "7.13 ± 0.50"),
    ("target.per_class.road", (88.6355, 0.0, 2), 3, "88.64 ± 0.00 (n=2)"),
    ("iteration", (1000.0, 0.0, 3), 3, "1000 ± 0"),
    ("semantic.mIoU", (38.8, math.nan, 1), 1, "38.80"),
    ("semantic.mIoU", (38.8, math.nan, 1), 2, "38.80 (n=1)"),
    ("semantic.mIoU", (math.nan, math.nan, 0), 2, "-"),
])
def test_cells_in_the_readme_style(key, stats, runs, cell):
    assert summarize.format_cell(stats, key, runs) == cell


def test_evaluate_output_folders_are_not_runs(tmp_path, capsys):
    """eval-<dataset>-<split>/ and <pred-dir>-eval/ hold a metrics.json but are not training runs."""
    for seed, miou in [(0, 40.0), (1, 44.0)]:
        run = _write_run(tmp_path, f"runs/atdt_seed{seed}", {"target": {"mIoU": miou}})
        _write_run(run, "eval-proc-b-val", {"dataset": "proc-b", "mIoU": 99.0})
    _write_run(tmp_path, "runs/preds-eval", {"dataset": "proc-b", "mIoU": 1.0})
    rows = summarize.main(_args(tmp_path / "runs"))
    assert [(Path(r["group"]).name, r["runs"]) for r in rows] == [("atdt", 2)]
    assert rows[0]["target.mIoU"][:2] == (42.0, pytest.approx(2 * math.sqrt(2)))
    assert "mIoU" not in [k for k in rows[0]]                      # the eval files' own key
    named = tmp_path / "runs" / "atdt_seed0" / "eval-proc-b-val"
    assert summarize.main(_args(named))[0]["mIoU"][0] == 99.0      # named: included
    capsys.readouterr()


def test_per_class_columns_are_named_after_the_classes(tmp_path, capsys):
    """Names come from the run's datasets (args.json): proc-b's 11 classes on the target,
    Cityscapes' 19 on the source; a null IoU (class absent) is left out of its mean."""
    target = [[80.0, 50.0, None] + [10.0] * 8, [90.0, 40.0, 6.0] + [20.0] * 8]
    for seed in (0, 1):
        run = _write_run(tmp_path, f"atdt_seed{seed}",
                         {"target": {"mIoU": 30.0, "per_class": target[seed]},
                          "source": {"per_class": [float(c) for c in range(19)]}})
        (run / "args.json").write_text(json.dumps({"src": "cityscapes", "tgt": "proc-b"}))
    rows = summarize.main(_args(tmp_path, "--per-class", "--keys", "per_class"))
    row = rows[0]
    assert row["target.per_class.road"][:2] == (85.0, pytest.approx(math.sqrt(50)))
    mean, std, n = row["target.per_class.wall"]
    assert (mean, n) == (6.0, 1) and math.isnan(std)
    assert row["target.per_class.sky"][0] == 15.0                   # the 11th AT/DT class
    assert row["source.per_class.bicycle"][0] == 18.0               # the 19th Cityscapes class
    out = capsys.readouterr().out
    assert "| target.per_class.road |" in out and "| 85.00 ± 7.07 |" in out
    assert "| 6.00 (n=1) |" in out


def test_class_names_by_dataset_and_length():
    assert summarize.dataset_class_names("nyuv2", 13)[0] == "bed"
    assert summarize.dataset_class_names("cityscapes", 13)[0] == "road"   # DADA's 13 (mIoU*)
    assert summarize.dataset_class_names("mapillary", 7)[-1] == "vehicle"
    assert summarize.dataset_class_names("proc-b", 19) is None          # wrong length: indices
    assert summarize.dataset_class_names("folder", 3) is None
