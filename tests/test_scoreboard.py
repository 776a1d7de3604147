"""tools/scoreboard.py on hand-written metrics.json files (the keys the training scripts write),
checked against margins, wins and verdicts worked out by hand."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "scoreboard", Path(__file__).resolve().parents[1] / "tools" / "scoreboard.py")
scoreboard = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(scoreboard)


def _write(root, folder, metrics):
    path = root / folder / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))


def _seg(miou):   # a segmentation score as lib.evaluation writes it
    return {"mIoU": miou, "acc": 80.0, "mean_acc": 50.0, "per_class": [miou, None]}


def _depth(abs_rel):
    return {"abs_rel": abs_rel, "sq_rel": 1.0, "rmse": 5.0, "rmse_log": 0.3, "log10": 0.1,
            "a1": 60.0, "a2": 80.0, "a3": 90.0}


@pytest.fixture
def runs(tmp_path):
    """AT/DT Dep->Sem only (Sem->Dep missing), DADA and HeadFreeze on 3 seeds (s1bn on 2),
    SemiMTL with STL on seeds 0-1 (m3 and stlbn missing), UM-Adapt on 2 seeds."""
    for seed, full, base_atdt, base_baseline in [(0, 50.0, 45.0, 38.0), (1, 40.0, 42.0, 39.0)]:
        _write(tmp_path, f"atdt_proc/depsem/full_seed{seed}",
               {"selection": "last", "task1": "depth", "task2": "semantic",
                "target": {"atdt": _seg(full), "baseline": _seg(99.0)}})
        _write(tmp_path, f"atdt_proc/depsem/base_seed{seed}",
               {"target": {"atdt": _seg(base_atdt), "baseline": _seg(base_baseline)}})
        # stage 1 has its own metrics.json: not a stage-2 run, must not be read
        _write(tmp_path, f"atdt_proc/depsem/stage1/full_seed{seed}", {"target": {"atdt": _seg(0.0)}})
    _write(tmp_path, "atdt_proc/semdep/full_seed0", {"target": {"atdt": _depth(0.3)}})  # no base run
    dada = {"s7": [40.0, 42.0, 44.0], "s1": [30.0, 31.0, 35.0], "s2": [25.0, 32.0, 36.0],
            "s4": [50.0, 30.0, 34.0], "s1bn": [45.0, 41.0]}
    for row, values in dada.items():
        for seed, v in enumerate(values):
            _write(tmp_path, f"dada_proc/{row}_seed{seed}",
                   {"setup": row, "source": _seg(70.0), "target": _seg(v)})
    _write(tmp_path, "dada_proc/ntr_s2_seed0", {"negative_transfer_rate": 30.0})
    semi = {  # (proc-a mIoU, rmse, proc-b mIoU, rmse) per seed
        "stl": [(30.0, 10.0, 20.0, 8.0), (25.0, 5.0, 10.0, 4.0)],
        "jtl": [(33.0, 9.0, 20.0, 8.8), (25.0, 4.5, 12.0, 4.0)],       # dM A/B: 10/-5, 5/10
        "m2": [(36.0, 10.0, 22.0, 7.2), (27.5, 5.0, 11.0, 4.0)],       # 10/10, 5/5
        "m1": [(30.0, 10.0, 20.0, 8.0), None, (1.0, 1.0, 1.0, 1.0)],   # 0/0; seed 2 has no STL
    }
    for row, seeds in semi.items():
        for seed, s in enumerate(seeds):
            if s:
                _write(tmp_path, f"semimtl_proc/{row}_seed{seed}", {"method": row, "scores": {
                    "proc-a": {**_seg(s[0]), **_depth(0.2), "rmse": s[1]},
                    "proc-b": {**_seg(s[2]), **_depth(0.2), "rmse": s[3]}}})
    um = {"adapt-adv": [20.0, 22.0], "base": [10.0, 12.0], "base-bn": [21.0, 21.0]}
    for folder, values in um.items():
        for seed, v in enumerate(values):
            _write(tmp_path, f"umadapt_proc/seed{seed}/{folder}",
                   {"stage": "adapt", "source": _seg(50.0), "target": {"proc-b": {**_seg(v), "mean": 30.0}}})
    hf = {"headfreeze": [24.0, 25.0, 26.0], "baseline": [25.0, 25.5, 25.0],
          "mtl-both-anchor": [26.0, 26.0], "mtl-tgt-anchor": [27.0, 26.0]}
    for row, values in hf.items():
        for seed, v in enumerate(values):
            _write(tmp_path, f"headfreeze_proc/{row}_seed{seed}", {"variant": row, "target": {
                "mean": v, "median": 20.0, "pct_11_25": 30.0, "pct_30": 70.0, "rmse_deg": 33.0, "mIoU": 40.0}})
    return tmp_path


def _run(*argv):
    rows = scoreboard.main(scoreboard.get_args_parser().parse_args([str(a) for a in argv]))
    return {f"{r['method']}: {r['comparison']}": r for r in rows}


def _check(row, margins, wins, holds):
    assert [row["per_seed"][s]["margin"] for s in row["seeds"]] == pytest.approx(margins)
    assert (row["wins"], row["n"], row["holds"]) == (wins, len(margins), holds)
    mean = sum(margins) / len(margins)
    assert row["margin"]["mean"] == pytest.approx(mean)
    if len(margins) > 1:
        sd = math.sqrt(sum((m - mean) ** 2 for m in margins) / (len(margins) - 1))
        assert row["margin"]["std"] == pytest.approx(sd)


def test_margins_wins_and_verdicts(runs, capsys):
    rows = _run("--runs", runs)
    _check(rows["DADA: S7 DADA > S1 source only"], [10, 11, 9], 3, "yes")
    _check(rows["DADA: S7 DADA > S2 AdvEnt"], [15, 10, 8], 3, "yes")
    _check(rows["DADA: S2 AdvEnt > S1 source only"], [-5, 1, 1], 2, "no")        # majority, mean < 0
    _check(rows["DADA: S4 depth adaptation > S1"], [20, -1, -1], 1, "no")        # mean > 0, minority
    _check(rows["DADA: S7 DADA > S1 + target through BN"], [-5, 1], 1, "no")     # s1bn: seeds 0-1 only
    _check(rows["DADA: S2 AdvEnt > S1 + target through BN"], [-20, -9], 0, "no")
    _check(rows["AT/DT: Dep->Sem: +aux +NDA > baseline (N2 on B)"], [12, 1], 2, "yes")
    _check(rows["AT/DT: Dep->Sem: +aux +NDA > base AT/DT"], [5, -2], 1, "no")
    # lower is better: margin = B - A; a tie is not a win
    _check(rows["HeadFreeze: HeadFreeze < baseline"], [1, 0.5, -1], 2, "yes")
    _check(rows["HeadFreeze: MTL (+both anchor) < MTL (+tgt anchor)"], [1, 0], 1, "no")
    _check(rows["UM-Adapt: Adv > multi-task baseline"], [10, 10], 2, "yes")
    _check(rows["UM-Adapt: Adv > baseline + target through BN"], [-1, 1], 1, "no")  # mean 0
    # SemiMTL, mean of A's and B's delta-M: jtl 2.5 / 7.5, m2 10 / 5, m1 0 (seed 0), stl 0
    _check(rows["SemiMTL: JTL > STL (delta-M 0 by definition)"], [2.5, 7.5], 2, "yes")
    _check(rows["SemiMTL: SemiMTL (M2) > JTL"], [7.5, -2.5], 1, "no")              # mean > 0, 1 of 2
    _check(rows["SemiMTL: M2 >= M1"], [10], 1, "yes")
    assert rows["SemiMTL: JTL > STL (delta-M 0 by definition)"]["b"] == {"mean": 0.0, "std": 0.0}
    assert rows["SemiMTL: M2 >= M1"]["margin"]["std"] is None
    out = capsys.readouterr().out
    assert ("| DADA: S7 DADA > S1 source only | Table 3: 42.6 vs 32.2 mIoU | 42.00 ± 2.00 | "
            "32.00 ± 2.65 | 10.00 ± 1.00 | 3/3 | yes |") in out
    assert "| 10.00 ± - | 1/1 | yes |" in out   # one seed: no std
    assert "ours: mean of A's and B's" in out


def test_missing_runs_print_dash_and_the_command(runs, capsys):
    rows = _run("--runs", runs)
    for name, script in [("AT/DT: Sem->Dep: +aux +NDA < baseline abs rel", "atdt"),
                         ("SemiMTL: M2 >= M3", "semimtl"), ("HeadFreeze: HeadFreeze < baseline + target "
                                                           "through BN", "headfreeze")]:
        row = rows[name]
        assert (row["n"], row["wins"], row["holds"], row["seeds"]) == (0, 0, "-", [])
        assert row["command"] == f"RUNS={runs / (script + '_proc')} bash experiments/{script}_procedural.sh"
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "Sem->Dep" in x)
    assert line.endswith(f"| - | - | - | 0/0 | - (make them: `RUNS={runs}/atdt_proc bash "
                         "experiments/atdt_procedural.sh`) |")
    assert scoreboard.command("DADA", "runs") == "bash experiments/dada_procedural.sh"
    assert scoreboard.command("DADA", "experiments/results/") == (   # the kept results: never weights there
        "bash experiments/dada_procedural.sh && bash experiments/scoreboard.sh keep")
    assert scoreboard.command("DADA", str(scoreboard.ROOT / "experiments" / "results")) == (
        "bash experiments/dada_procedural.sh && bash experiments/scoreboard.sh keep")


def test_delta_m_choice_and_json(runs, tmp_path, capsys):
    rows = _run("--runs", runs, "--delta-m", "proc-b", "--json", tmp_path / "out" / "rows.json")
    _check(rows["SemiMTL: SemiMTL (M2) > JTL"], [15, -5], 1, "no")   # B: m2 10 / 5, jtl -5 / 10
    _check(rows["SemiMTL: JTL > STL (delta-M 0 by definition)"], [-5, 10], 1, "no")
    assert capsys.readouterr().out == ""   # --json alone: no table
    saved = json.loads((tmp_path / "out" / "rows.json").read_text())
    assert [r["comparison"] for r in saved] == [r["comparison"] for r in rows.values()]
    assert saved == json.loads(json.dumps(list(rows.values())))
    rows = _run("--runs", runs, "--delta-m", "proc-a", "--json", tmp_path / "a.json", "--markdown")
    _check(rows["SemiMTL: SemiMTL (M2) > JTL"], [0, 0], 0, "no")      # A: 10 / 5 on both
    assert "ours: A's" in capsys.readouterr().out


def test_empty_runs_folder(tmp_path, capsys):
    rows = _run("--runs", tmp_path)
    assert rows and all(r["holds"] == "-" and r["command"] for r in rows.values())
    assert len(capsys.readouterr().out.splitlines()) == len(rows) + 2


def test_figure_draws_each_row_on_the_claimed_side(runs, tmp_path):
    """--figure: one line per row with seeds; the mean's dot sits right of the centre line where
    the margin is positive (the paper's direction), left where negative, green when the row
    holds and red when not, at the x that the row's own scale gives (worked out here)."""
    from PIL import Image
    out = tmp_path / "fig" / "scoreboard.png"
    rows = _run("--runs", runs, "--figure", out)
    img = Image.open(out).convert("RGB")
    drawn = [r for r in rows.values() if r["n"]]
    assert img.size == (scoreboard.FIG_W, scoreboard.ROW_H * (len(drawn) + 2))
    x0 = scoreboard.LABEL_W + scoreboard.PLOT_W // 2
    for i, r in enumerate(drawn):
        y = scoreboard.ROW_H * (i + 1) + scoreboard.ROW_H // 2
        m, sd = r["margin"]["mean"], r["margin"]["std"] or 0.0
        scale = max([abs(m) + sd] + [abs(v["margin"]) for v in r["per_seed"].values()])
        x = x0 + round(m / scale * (scoreboard.PLOT_W // 2 - 10))
        colour = scoreboard.GREEN if r["holds"] == "yes" else scoreboard.RED
        assert img.getpixel((x, y - 3)) == colour, r["comparison"]   # the dot, above the bar
        if m:
            assert (x > x0) == (m > 0)
    s7 = next(i for i, r in enumerate(drawn) if r["comparison"] == "S7 DADA > S1 source only")
    y = scoreboard.ROW_H * (s7 + 1) + scoreboard.ROW_H // 2
    # margins 10, 11, 9: mean 10 ± 1 on a scale of 11, so the dot is at 10 / 11 of the half-width
    assert img.getpixel((x0 + round(10 / 11 * (scoreboard.PLOT_W // 2 - 10)), y - 3)) == scoreboard.GREEN
