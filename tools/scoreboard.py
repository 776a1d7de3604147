"""The papers' headline comparisons on the procedural benchmark (proc-a -> proc-b), one row each.

Reads the metrics.json files that experiments/*_procedural.sh write under --runs (default runs):

    atdt_proc/{depsem,semdep}/{base,full}_seedN/       target.atdt / target.baseline: mIoU, abs_rel
    dada_proc/{s1,s1bn,s1ff,s2,s3,s4,s7}_seedN/        target.mIoU
    semimtl_proc/{stl,stlbn,jtl,m1,m2,m3}_seedN/       scores.proc-a / proc-b: mIoU, rmse -> delta-M
    umadapt_proc/seedN/{base,base-bn,adapt-stats,adapt-b,adapt-noadv,adapt-adv}/  target.proc-b.mIoU
    headfreeze_proc/{baseline,bn,mtl-tgt-anchor,mtl-both-anchor,headfreeze}_seedN/  target.mean

Each row pairs the two sides by seed (only seeds present for both) and reports both sides'
mean ± sample std, the per-seed margin A - B signed so that positive is the paper's claimed
direction (B - A where lower is better), the seeds on which the margin is > 0 (ties are not
wins) and "holds?": yes when the mean margin is > 0 and the wins are a strict majority.
A row without seeds says "-" and the command that makes its runs.

    python tools/scoreboard.py                          # Markdown to stdout
    python tools/scoreboard.py --runs runs --json scoreboard.json --markdown
    python tools/scoreboard.py --figure docs/scoreboard.png   # the picture (pillow)
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys
from collections import namedtuple
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# read(runs) -> {seed: value}; lower: the claim is A < B; digits: decimals printed.
Comparison = namedtuple("Comparison", "method label claim a b lower digits", defaults=(False, 2))
SCRIPTS = {"AT/DT": "atdt", "DADA": "dada", "SemiMTL": "semimtl", "UM-Adapt": "umadapt",
           "HeadFreeze": "headfreeze"}


def load(runs, pattern):
    """{seed: metrics.json} of the run folders matching pattern, whose {seed} is the seed number.
    Matched as a whole path, so that s1_seed0 does not pick up s1bn_seed0 or ntr_s1_seed0."""
    regex = re.compile(re.escape(pattern).replace(r"\{seed\}", r"(\d+)"))
    out = {}
    for path in glob.glob(os.path.join(runs, pattern.format(seed="*"), "metrics.json")):
        m = regex.fullmatch(Path(os.path.relpath(os.path.dirname(path), runs)).as_posix())
        if m:
            with open(path) as f:
                out[m.group(1)] = json.load(f)
    return out


def metric(pattern, *keys):
    """A side: the number at metrics[keys[0]][keys[1]]... of every seed's run."""
    def read(runs):
        out = {}
        for seed, m in load(runs, pattern).items():
            for k in keys:
                m = m.get(k) if isinstance(m, dict) else None
            if isinstance(m, (int, float)):
                out[seed] = float(m)
        return out
    return read


def stl_delta_m(scores, stl_scores):
    """train_semimtl.stl_delta_m (what its table() prints), restated over lib.metrics.delta_m:
    importing train_semimtl pulls in torchvision and takes ~5 s, the test's whole budget."""
    from lib.metrics import delta_m   # torch: only when SemiMTL runs are there
    out = {}
    for name, m in scores.items():
        b = stl_scores.get(name, {})
        keys = [k for k in ("mIoU", "rmse") if m.get(k) is not None and b.get(k) is not None]
        try:
            out[name] = delta_m({k: m[k] for k in keys}, {k: b[k] for k in keys}, {"rmse"}) \
                if len(keys) == 2 else None
        except ValueError:   # an STL score of 0: relative gain undefined
            out[name] = None
    return out


def semimtl_dm(row, which):
    """A side: delta-M (eq. 10) of row against the STL run of the same seed, on proc-a, proc-b
    or their mean. STL against itself is 0, so the stl side is 0 wherever its run exists."""
    def read(runs):
        stl = {s: m["scores"] for s, m in load(runs, "semimtl_proc/stl_seed{seed}").items()}
        out = {}
        for seed, m in load(runs, f"semimtl_proc/{row}_seed{{seed}}").items():
            if seed not in stl:
                continue
            d = stl_delta_m(m["scores"], stl[seed])
            values = [d.get("proc-a"), d.get("proc-b")] if which == "mean" else [d.get(which)]
            if None not in values:
                out[seed] = statistics.mean(values)
        return out
    return read


def comparisons(dm):
    """The rows, A first. Paper numbers from the papers' own tables (quoted per row)."""
    C = Comparison
    atdt = lambda d, v, row, k: metric(f"atdt_proc/{d}/{v}_seed{{seed}}", "target", row, k)
    dada = lambda s: metric(f"dada_proc/{s}_seed{{seed}}", "target", "mIoU")
    semi = lambda r: semimtl_dm(r, dm)
    um = lambda f: metric(f"umadapt_proc/seed{{seed}}/{f}", "target", "proc-b", "mIoU")
    hf = lambda v: metric(f"headfreeze_proc/{v}_seed{{seed}}", "target", "mean")
    nobn = " (the paper has no BN control: its baseline's number)"
    # SemiMTL Table 3, "Across Domains": seg labels from Cityscapes (~ A = proc-a), depth labels
    # from Synscapes (~ B = proc-b); Delta-M per dataset, Cityscapes / Synscapes, and their mean.
    dmw = {"mean": "mean of A's and B's", "proc-a": "A's", "proc-b": "B's"}[dm]
    sm = lambda a, b: f"Table 3 delta-M Cityscapes/Synscapes: {a[0]:+.1f}/{a[1]:+.1f} vs " \
        f"{b[0]:+.1f}/{b[1]:+.1f} % (mean {sum(a) / 2:+.2f} vs {sum(b) / 2:+.2f}); ours: {dmw}"
    m2, m1, m3, jtl, stl = (24.3, 12.1), (22.4, 11.7), (23.7, 11.2), (19.6, 8.5), (0.0, 0.0)
    # UM-Adapt Table 3: PBRS -> NYUD-v2 semantic segmentation, "Mean IOU" as a fraction.
    ua = lambda v, n: f"Table 3: {v} {n} vs 0.022 Multi Task Baseline mean IoU"
    adv, noadv, ccr = ua(0.221, "UM-Adapt-(Adv.)"), ua(0.214, "UM-Adapt-(noAdv.)"), ua(0.163, "UM-Adapt-B(CCR)")
    # HeadFreeze Tables 1-2, Indoor SUNCG -> NYUdv2: the semantic-anchor setting proc-a/b mirror.
    hfc = lambda t, a, b: f"{t} (indoor): Mean {a} vs {b} deg; ours: mean angular error"
    return [
        # AT/DT journal Sec. 5.1: "our final framework yields 51.28% mIoU ... with an improvement
        # of +12.48% ... wrt to the baseline" (Table 1, whose extracted text is garbled).
        C("AT/DT", "Dep->Sem: +aux +NDA > baseline (N2 on B)", "Table 1: 51.28 vs 38.80 mIoU",
          atdt("depsem", "full", "atdt", "mIoU"), atdt("depsem", "base", "baseline", "mIoU")),
        # Table 2: "Carla CS Baseline 0.7398 ..." and "Carla CS AT/DT 0.3928 ...".
        C("AT/DT", "Sem->Dep: +aux +NDA < baseline abs rel", "Table 2: 0.3928 vs 0.7398 abs rel",
          atdt("semdep", "full", "atdt", "abs_rel"), atdt("semdep", "base", "baseline", "abs_rel"),
          lower=True, digits=3),
        # Table 3 (ablation): the first row (no Aux, no NDA) 48.04, the last (Aux + NDA) 51.28.
        C("AT/DT", "Dep->Sem: +aux +NDA > base AT/DT", "Table 3: 51.28 vs 48.04 mIoU",
          atdt("depsem", "full", "atdt", "mIoU"), atdt("depsem", "base", "atdt", "mIoU")),
        # DADA Table 3, the S1-S7 ablation (Table 4 is DADA on fractions of SYNTHIA).
        C("DADA", "S7 DADA > S1 source only", "Table 3: 42.6 vs 32.2 mIoU", dada("s7"), dada("s1")),
        C("DADA", "S7 DADA > S2 AdvEnt", "Table 3: 42.6 vs 40.8 mIoU", dada("s7"), dada("s2")),
        C("DADA", "S2 AdvEnt > S1 source only", "Table 3: 40.8 vs 32.2 mIoU", dada("s2"), dada("s1")),
        C("DADA", "S4 depth adaptation > S1", "Table 3: 35.7 vs 32.2 mIoU", dada("s4"), dada("s1")),
        # Sec. 4.2: "Comparable performance of S2 and S3 indicates that depth supervision on the
        # source domain is not effective in absence of depth-specific adaptation."
        C("DADA", "S7 DADA > S3 (AdvEnt + feature fusion)", "Table 3: 42.6 vs 40.7 mIoU", dada("s7"), dada("s3")),
        C("DADA", "S7 DADA > S1 + feature fusion (depth supervision, no adaptation)",
          "Table 3: 42.6 vs 32.2 mIoU (the paper has no such row: S1's number)", dada("s7"), dada("s1ff")),
        C("DADA", "S7 DADA > S1 + target through BN", "Table 3: 42.6 vs 32.2 mIoU" + nobn,
          dada("s7"), dada("s1bn")),
        C("DADA", "S2 AdvEnt > S1 + target through BN", "Table 3: 40.8 vs 32.2 mIoU" + nobn,
          dada("s2"), dada("s1bn")),
        C("SemiMTL", "SemiMTL (M2) > JTL", sm(m2, jtl), semi("m2"), semi("jtl")),
        C("SemiMTL", "JTL > STL (delta-M 0 by definition)", sm(jtl, stl), semi("jtl"), semi("stl")),
        C("SemiMTL", "JTL > STL + both datasets through BN", sm(jtl, stl) + nobn, semi("jtl"), semi("stlbn")),
        C("SemiMTL", "M2 >= M1", sm(m2, m1), semi("m2"), semi("m1")),
        C("SemiMTL", "M2 >= M3", sm(m2, m3), semi("m2"), semi("m3")),
        C("UM-Adapt", "Adv > multi-task baseline", adv, um("adapt-adv"), um("base")),
        C("UM-Adapt", "noAdv > multi-task baseline", noadv, um("adapt-noadv"), um("base")),
        C("UM-Adapt", "B(CCR) > multi-task baseline", ccr, um("adapt-b"), um("base")),
        C("UM-Adapt", "Adv > baseline + target through BN", adv + nobn, um("adapt-adv"), um("base-bn")),
        C("UM-Adapt", "noAdv > baseline + target through BN", noadv + nobn, um("adapt-noadv"), um("base-bn")),
        C("UM-Adapt", "B(CCR) > baseline + target through BN", ccr + nobn, um("adapt-b"), um("base-bn")),
        # The adaptation's own control: what Adv gains beyond res5's running statistics.
        C("UM-Adapt", "Adv > Mt res5 through BN only", adv + nobn, um("adapt-adv"), um("adapt-stats")),
        C("HeadFreeze", "HeadFreeze < baseline", hfc("Tables 1-2", 24.6, 25.8),
          hf("headfreeze"), hf("baseline"), lower=True),
        C("HeadFreeze", "HeadFreeze < baseline + target through BN", hfc("Tables 1-2", 24.6, 25.8) + nobn,
          hf("headfreeze"), hf("bn"), lower=True),
        C("HeadFreeze", "MTL (+both anchor) < MTL (+tgt anchor)", hfc("Table 2", 25.7, 26.2),
          hf("mtl-both-anchor"), hf("mtl-tgt-anchor"), lower=True),
        C("HeadFreeze", "HeadFreeze < MTL (+both anchor)", hfc("Table 2", 24.6, 25.7),
          hf("headfreeze"), hf("mtl-both-anchor"), lower=True),
    ]


def stats(values):
    """(mean, sample std or None for one value), or (None, None) for none."""
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def command(method, runs):
    """The command that makes a method's runs (RUNS= when --runs is not the scripts' default;
    for the kept results, the runs in runs/ and then `keep`, never weights in experiments/)."""
    name = SCRIPTS[method]
    if Path(runs).resolve() == ROOT / "experiments" / "results":   # however the path is spelled
        return f"bash experiments/{name}_procedural.sh && bash experiments/scoreboard.sh keep"
    env = "" if os.path.normpath(runs) == "runs" else f"RUNS={os.path.join(runs, name + '_proc')} "
    return f"{env}bash experiments/{name}_procedural.sh"


def score(c, runs):
    """One comparison's row as a dict (the JSON record)."""
    a, b = c.a(runs), c.b(runs)
    seeds = sorted(set(a) & set(b), key=int)
    sign = -1.0 if c.lower else 1.0
    margins = [sign * (a[s] - b[s]) for s in seeds]
    wins = sum(m > 0 for m in margins)
    mean, std = stats(margins)
    holds = "-" if not seeds else "yes" if mean > 0 and 2 * wins > len(seeds) else "no"
    return {"method": c.method, "comparison": c.label, "claim": c.claim, "lower_is_better": c.lower,
            "digits": c.digits, "seeds": seeds, "a": dict(zip(("mean", "std"), stats([a[s] for s in seeds]))),
            "b": dict(zip(("mean", "std"), stats([b[s] for s in seeds]))),
            "margin": {"mean": mean, "std": std}, "wins": wins, "n": len(seeds), "holds": holds,
            "per_seed": {s: {"a": a[s], "b": b[s], "margin": m} for s, m in zip(seeds, margins)},
            "command": None if seeds else command(c.method, runs)}


def cell(s, digits):
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± " + ("-" if s["std"] is None else f"{s['std']:.{digits}f}")


def markdown(rows):
    lines = ["| comparison | paper's claim | ours: A | ours: B | margin A-B (+ = claimed) "
             "| wins/seeds | holds? |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        d = r["digits"]
        holds = r["holds"] if r["n"] else f"- (make them: `{r['command']}`)"
        lines.append(f"| {r['method']}: {r['comparison']} | {r['claim']} | {cell(r['a'], d)} | "
                     f"{cell(r['b'], d)} | {cell(r['margin'], d)} | {r['wins']}/{r['n']} | {holds} |")
    return "\n".join(lines)


FIG_W, ROW_H, LABEL_W, PLOT_W = 1100, 26, 430, 420   # pixels: the figure's layout
GREEN, RED, GREY = (30, 140, 60), (200, 50, 40), (150, 150, 150)


def figure(rows, path):
    """The scoreboard as a picture (pillow): one line per comparison with seeds, its margin's
    mean (dot) and mean ± sample std (bar) on its own scale (the largest |margin| or mean + std
    of the row), each seed's margin as a tick, right of the centre line = the paper's direction;
    green where the comparison holds, red where not."""
    from PIL import Image, ImageDraw
    rows = [r for r in rows if r["n"]]
    img = Image.new("RGB", (FIG_W, ROW_H * (len(rows) + 2)), "white")
    draw = ImageDraw.Draw(img)
    x0 = LABEL_W + PLOT_W // 2
    draw.text((8, 6), "margin A - B, + = the paper's direction (each row on its own scale); "
              "dot = mean, bar = ± std, ticks = seeds", fill="black")
    for i, r in enumerate(rows):
        y = ROW_H * (i + 1) + ROW_H // 2
        m, sd = r["margin"]["mean"], r["margin"]["std"] or 0.0
        seeds = [v["margin"] for v in r["per_seed"].values()]
        scale = max([abs(m) + sd] + [abs(v) for v in seeds]) or 1.0
        px = lambda v: x0 + round(v / scale * (PLOT_W // 2 - 10))
        colour = GREEN if r["holds"] == "yes" else RED
        draw.text((8, y - 6), f"{r['method']}: {r['comparison']}"[:70], fill="black")
        draw.line((LABEL_W, y, LABEL_W + PLOT_W, y), fill=(225, 225, 225))
        draw.line((x0, y - ROW_H // 2 + 2, x0, y + ROW_H // 2 - 2), fill=GREY)
        draw.line((px(m - sd), y, px(m + sd), y), fill=colour, width=3)
        for v in seeds:
            draw.line((px(v), y - 6, px(v), y + 6), fill=colour)
        draw.ellipse((px(m) - 4, y - 4, px(m) + 4, y + 4), fill=colour)
        d = r["digits"]
        draw.text((LABEL_W + PLOT_W + 12, y - 6), f"{m:+.{d}f} ± {sd:.{d}f}  {r['wins']}/{r['n']}  "
                  f"{r['holds']}", fill=colour)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return img


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="The papers' headline comparisons on the "
                                     "procedural runs", add_help=add_help)
    parser.add_argument("--runs", default="runs", help="the folder holding *_proc/ (default runs)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--markdown", action="store_true",
                        help="print the Markdown table (the default; with --json, print it as well)")
    parser.add_argument("--figure", metavar="PNG", help="also draw the rows with seeds as a picture")
    parser.add_argument("--delta-m", choices=["mean", "proc-a", "proc-b"], default="mean",
                        help="SemiMTL's delta-M: the mean of both datasets' (default; the paper "
                             "claims its ordering on both) or one dataset's")
    return parser


def main(args):
    """Score every comparison; print Markdown, write --json; return the rows."""
    rows = [score(c, args.runs) for c in comparisons(args.delta_m)]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.figure:
        figure(rows, args.figure)
    if args.markdown or not (args.json or args.figure):
        print(markdown(rows))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
