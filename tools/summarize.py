"""Summarise metrics.json files of several runs as mean ± std over seeds.

Runs that differ only by seed are grouped: by default a run's group is its folder path
with a trailing ``_seed<N>``, ``-seed<N>`` or ``-s<N>`` removed, so runs/atdt_seed0 and
runs/atdt_seed1 form the group runs/atdt. Nested metrics are flattened as ``a.b``;
non-numeric values are skipped, and so are lists and ``per_class`` entries unless
--per-class is given. The std is the sample std (n - 1), empty when n = 1.

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

SEED_SUFFIX = re.compile(r"([_-]seed\d+|-s\d+)$")


def find_metrics(folders):
    """(metrics.json paths, folders without any): a folder's own file, else those below it."""
    found, empty = [], []
    for folder in folders:
        own = Path(folder) / "metrics.json"
        paths = [own] if own.is_file() else sorted(Path(folder).rglob("metrics.json"))
        found += paths
        if not paths:
            empty.append(str(folder))
    return list(dict.fromkeys(found)), empty  # a run named twice counts once


def flatten(metrics, per_class=False, prefix=""):
    """Numeric leaves of a nested dict as {'a.b': value}; lists become 'a.<i>' if per_class."""
    flat = {}
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, bool):  # bool is an int subclass, but not a metric
            continue
        if isinstance(value, (int, float)):
            flat[name] = float(value)
        elif isinstance(value, dict) and (per_class or key != "per_class"):
            flat.update(flatten(value, per_class, name + "."))
        elif isinstance(value, list) and per_class:
            flat.update(flatten(value, per_class, name + "."))
    return flat


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
        runs[path.parent] = flatten(metrics, per_class) if isinstance(metrics, dict) else {}
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


def format_cell(stats):
    """'mean ± std (n=N)' with 4 significant digits; '-' when no run has the key."""
    mean, std, n = stats
    if n == 0:
        return "-"
    if n == 1:
        return f"{mean:.4g} (n=1)"
    return f"{mean:.4g} ± {std:.2g} (n={n})"


def to_markdown(rows, keys):
    """A Markdown table: one row per group, one column per key."""
    lines = ["| group | runs | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for row in rows:
        cells = [row["group"], str(row["runs"])] + [format_cell(row[k]) for k in keys]
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
