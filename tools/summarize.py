"""Summarise metrics.json files of several runs as mean ± std over seeds.

One row per configuration: runs that differ only by seed are grouped. By default a run's
group is its folder path with a ``_seed<N>``, ``-seed<N>`` or ``-s<N>`` ending any of its
folder names removed, so runs/atdt_seed0 and runs/atdt_seed1 form the group runs/atdt, and
runs/nyu_seed0/base and runs/nyu_seed1/base the group runs/nyu/base. Nested metrics are flattened
as ``a.b``; non-numeric values (and null) are skipped, and so are lists and ``per_class``
entries unless --per-class is given, which names each per-class IoU after its class
(``target.atdt.per_class.road``; lib/data class tables, by the run's dataset and the list's
length; indices when no table fits). The std is the sample std (n - 1).

Cells read as in the README's tables, ``18.89 ± 2.74``, at fixed decimals: 2 for
percentages (mIoU, acc, a1-a3, per-class IoU, ...) and angles in degrees, 3 for errors
(abs_rel, sq_rel, rmse, rmse_log, log10), 4 significant digits for anything else. A single
run shows its value alone; a cell over fewer runs than its row (a run without that metric,
a null IoU) ends with ``(n=K)``. The CSV keeps full precision.

Only training runs are collected when a folder is searched: evaluate.py's output folders
(``eval-<dataset>-<split>/`` next to a checkpoint, ``<pred-dir>-eval/``) hold a metrics.json
too, but are re-scorings of a run, not runs, and are skipped (name one to include it).

Usage:
    python tools/summarize.py runs/atdt_seed0 runs/atdt_seed1 runs/atdt_seed2
    python tools/summarize.py --glob 'runs/*' --keys mIoU acc abs_rel --md table.md --csv table.csv
    python tools/summarize.py runs/ --group-by-regex '(.*)_lr[0-9.e-]+'   # also pool learning rates

A folder without its own metrics.json is searched recursively, so ``runs/`` finds every
run below it. --keys matches whole dotted parts of the flattened keys: ``abs_rel`` matches
``depth.abs_rel``, ``semantic`` matches every ``semantic.*``.
"""
import argparse
import csv
import glob
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# A seed suffix ends the run folder's name or a folder above it (experiments/*.sh: NAME_seedN,
# and UM-Adapt's stages below it: NAME_seedN/base).
SEED_SUFFIX = re.compile(r"([_-]seed\d+|-s\d+)(?=/|$)")
# Decimals per metric (the last part of a flattened key), as the README's tables print them.
PERCENT = {"mIoU", "acc", "mean_acc", "a1", "a2", "a3", "pct_11_25", "pct_22_5", "pct_30"}
DEGREES = {"mean", "median", "rmse_deg"}
ERRORS = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10"}


def is_eval_folder(name):
    """Whether a folder name is one evaluate.py writes (eval-<dataset>-<split>, <pred-dir>-eval)."""
    return name.startswith("eval-") or name.endswith("-eval")


def find_metrics(folders):
    """(metrics.json paths, folders without any): a folder's own file, else the training runs
    below it (evaluate.py's output folders are re-scorings, not runs: skipped)."""
    found, empty = [], []
    for folder in folders:
        own = Path(folder) / "metrics.json"
        if own.is_file():
            paths = [own]
        else:
            paths = [p for p in sorted(Path(folder).rglob("metrics.json"))
                     if not any(is_eval_folder(part) for part in p.relative_to(folder).parts[:-1])]
        found += paths
        if not paths:
            empty.append(str(folder))
    return list(dict.fromkeys(found)), empty  # a run named twice counts once


def flatten(metrics, per_class=False, prefix="", names=None):
    """Numeric leaves of a nested dict as {'a.b': value}; lists become 'a.<i>' if per_class.

    names(key, length): class names for the list at `key` (or None): its entries are then
    'a.per_class.<class>' rather than indices, so columns say which class they are."""
    flat = {}
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, bool):  # bool is an int subclass, but not a metric
            continue
        if isinstance(value, (int, float)):
            flat[name] = float(value)
        elif isinstance(value, dict) and (per_class or key != "per_class"):
            flat.update(flatten(value, per_class, name + ".", names))
        elif isinstance(value, list) and per_class:
            labels = names(name, len(value)) if names else None
            if labels:
                value = dict(zip(labels, value))
            flat.update(flatten(value, per_class, name + ".", names))
    return flat


def dataset_class_names(dataset, k):
    """The k class names of a dataset's class map, from lib/data's tables (no files read).

    Datasets with their own classes (procedural, NYUv2, ISPRS, Mapillary) first, then the
    Cityscapes-derived maps of lib.data.labels by count; a `folder` dataset's names live in
    its dataset.json, so it gets None (indices)."""
    from lib.data import isprs, mapillary, nyuv2, procedural
    from lib.data.labels import CLASS_NAMES
    own = {"proc-a": procedural.CLASSES, "proc-b": procedural.CLASSES, "mapillary": mapillary.CLASSES_7,
           "isprs_potsdam": isprs.CLASSES, "isprs_vaihingen": isprs.CLASSES}
    if dataset == "nyuv2":
        names = {13: nyuv2.CLASSES_13, 40: nyuv2.CLASSES_40}.get(k)
    elif dataset == "folder":
        names = None
    else:
        names = own.get(dataset, CLASS_NAMES.get(k))
    return list(names) if names is not None and len(names) == k else None


def run_datasets(run_dir, metrics):
    """{'src', 'tgt', 'dataset'} of a run: its args.json, else what metrics.json records."""
    found = {k: metrics.get(k) for k in ("src", "tgt", "dataset") if isinstance(metrics.get(k), str)}
    try:
        args = json.loads((Path(run_dir) / "args.json").read_text())
    except (OSError, json.JSONDecodeError):
        args = {}
    for k in ("src", "tgt"):
        if isinstance(args.get(k), str):
            found.setdefault(k, args[k])
    return found


def class_namer(datasets):
    """names(key, length) for flatten: the block's dataset is the source's for keys under
    'source' or 'selection_val' (scored on the source's val split), else the scored dataset
    (evaluate.py's 'dataset') or the target's."""
    def names(key, length):
        first = key.split(".")[0]
        if first in ("source", "selection_val"):
            dataset = datasets.get("src")
        else:
            dataset = datasets.get("dataset") or datasets.get("tgt")
        return dataset_class_names(dataset, length)
    return names


def group_name(run_dir, regex=None):
    """The group of a run: --group-by-regex's first group (or match), else seed-stripped path."""
    path = Path(run_dir).as_posix()
    if regex is not None:
        match = re.search(regex, path)  # a pattern string or a compiled one
        if match is None:
            return path  # an unmatched run stands alone rather than failing the table
        return match.group(1) if match.groups() else match.group(0)
    return SEED_SUFFIX.sub("", path)


def load_runs(paths, per_class=False):
    """{run folder: flattened metrics} for each metrics.json path."""
    runs = {}
    for path in paths:
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: cannot read {path}: {e}")
        if not isinstance(metrics, dict):
            runs[path.parent] = {}
            continue
        names = class_namer(run_datasets(path.parent, metrics)) if per_class else None
        runs[path.parent] = flatten(metrics, per_class, names=names)
    return runs


def key_matches(want, key):
    """Whether ``want`` is a run of whole dotted parts of ``key`` (abs_rel ~ depth.abs_rel)."""
    return f".{want}." in f".{key}."


def select_keys(runs, requested=None):
    """Keys to report: all found (first-seen order), or those matching the requested names."""
    available = list(dict.fromkeys(k for metrics in runs.values() for k in metrics))
    if not requested:
        return available
    keys = []
    for want in requested:
        matches = [k for k in available if key_matches(want, k)]
        if not matches:
            raise SystemExit(
                f"error: unknown key '{want}'; available: {', '.join(available) or 'none'}"
            )
        keys += [k for k in matches if k not in keys]
    return keys


def mean_std(values):
    """(mean, sample std or nan when n < 2, n); a diverged (nan / inf) run gives nan."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    # Written out rather than statistics.stdev, which raises on inf instead of giving nan.
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def summarize(runs, keys, regex=None):
    """One row per group: {'group', 'runs', key: (mean, std, n)}, groups in first-seen order."""
    groups = {}
    for run_dir, metrics in runs.items():
        groups.setdefault(group_name(run_dir, regex), []).append(metrics)
    rows = []
    for name, members in groups.items():
        row = {"group": name, "runs": len(members)}
        for key in keys:
            row[key] = mean_std([m[key] for m in members if key in m])
        rows.append(row)
    return rows


def decimals(key):
    """Fixed decimals of a metric, so a column lines up and compares with the README's tables:
    2 for percentages (per-class IoU included) and degrees, 3 for errors, None otherwise."""
    parts = key.split(".")
    if parts[-1] in PERCENT or parts[-1] in DEGREES or "per_class" in parts[:-1]:
        return 2
    if parts[-1] in ERRORS:
        return 3
    return None


def format_number(x, places):
    """x at `places` decimals, or 4 significant digits when the metric has no fixed format."""
    return f"{x:.4g}" if places is None else f"{x:.{places}f}"


def format_cell(stats, key="", runs=None):
    """'mean ± std' as in the README; the mean alone for one run; '(n=K)' when fewer than
    the row's `runs` runs have the key; '-' when none has it."""
    mean, std, n = stats
    if n == 0:
        return "-"
    places = decimals(key)
    cell = format_number(mean, places)
    if n > 1:
        cell += f" ± {format_number(std, places)}"
    if runs is not None and n != runs:
        cell += f" (n={n})"
    return cell


def to_markdown(rows, keys):
    """A Markdown table: one row per group, one column per key."""
    lines = ["| group | runs | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for row in rows:
        cells = [row["group"], str(row["runs"])] + [format_cell(row[k], k, row["runs"]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_number(x):
    """Full precision, so the CSV can be re-analysed without rounding."""
    return repr(float(x))


def write_csv(rows, keys, path):
    """CSV with group, runs, then <key>_mean, <key>_std, <key>_n per key (full precision)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = [f"{k}_{stat}" for k in keys for stat in ("mean", "std", "n")]
        writer.writerow(["group", "runs"] + header)
        for row in rows:
            cells = [row["group"], row["runs"]]
            for key in keys:
                mean, std, n = row[key]
                cells += [_csv_number(mean) if n else "", _csv_number(std) if n > 1 else "", n]
            writer.writerow(cells)


def get_args_parser(add_help=True):
    """The command-line flags."""
    parser = argparse.ArgumentParser(
        description="Mean ± std of metrics.json over seeds", add_help=add_help
    )
    parser.add_argument("run_dirs", nargs="*", help="run folders (or folders holding runs)")
    parser.add_argument("--glob", action="append", default=[],
                        help="glob pattern for run folders, e.g. 'runs/*' (repeatable)")
    parser.add_argument("--keys", nargs="+", default=None,
                        help="metrics to report: flattened keys or whole dotted parts of them "
                        "(default: all)")
    parser.add_argument("--group-by-regex", default=None,
                        help="group runs by this regex's first group (or whole match) on the path")
    parser.add_argument("--per-class", action="store_true",
                        help="also report lists and per_class entries")
    parser.add_argument("--md", default=None, help="write the Markdown table here")
    parser.add_argument("--csv", default=None, help="write a CSV (mean, std, n per key) here")
    return parser


def main(args):
    """Collect, group and print; write --md / --csv; return the rows (for tests and notebooks)."""
    if not args.run_dirs and not args.glob:
        raise SystemExit("error: no run folders given: pass RUN_DIR... or --glob 'runs/*'")
    globbed = [p for pattern in args.glob for p in sorted(glob.glob(pattern)) if Path(p).is_dir()]
    paths, empty = find_metrics(list(args.run_dirs) + globbed)
    if not paths:
        named = ", ".join(list(args.run_dirs) + [repr(p) for p in args.glob])
        raise SystemExit(f"error: no metrics.json found under: {named}")
    if empty:
        # Unfinished runs have no metrics.json yet: say so, but summarise the rest.
        print(f"warning: no metrics.json under: {', '.join(empty)}", file=sys.stderr)
    runs = load_runs(paths, args.per_class)
    try:
        regex = re.compile(args.group_by_regex) if args.group_by_regex else None
    except re.error as e:
        raise SystemExit(f"error: invalid --group-by-regex {args.group_by_regex!r}: {e}")
    keys = select_keys(runs, args.keys)
    rows = summarize(runs, keys, regex)
    table = to_markdown(rows, keys)
    print(table, end="")
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(table)
    if args.csv:
        write_csv(rows, keys, args.csv)
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
