"""tools/reliability_probe.py end to end, one small trial per script: a run killed with SIGKILL
and resumed with --resume auto ends bit-identical to an uninterrupted one (UM-Adapt across its
stage chain, HeadFreeze after its switch) and leaves no temporary file once it writes again;
every bad input of the probe list stops with exit code 2 and an `error:` line before any run
folder exists. The commands are forks of a server that has imported torch (--launch fork):
new interpreters would cost seconds each here."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import reliability_probe  # noqa: E402


def test_kill_resume_every_script_and_bad_inputs(tmp_path):
    args = reliability_probe.get_args_parser().parse_args(
        ["--trials", "1", "--iters", "3", "--launch", "fork", "--jobs", "3", "--out", str(tmp_path)])
    result = reliability_probe.main(args)
    assert set(result["crash"]) == set(reliability_probe.SCRIPT_NAMES)
    for name, r in result["crash"].items():
        t = r["trials"][0]
        assert t["resume_exit"] == 0 and t["bit_identical"] and t["metrics_identical"], (name, t)
        assert t["checkpoint_loadable"] is not False and t["temp_files_after_resume"] == 0, (name, t)
        assert any(f.endswith("checkpoint.pth") for f in t["compared_files"]), (name, t)
    um = result["crash"]["train_umadapt.py"]
    assert um["chain"] == ["transfer", "base", "ccr", "adapt"] and um["trials"][0]["stage"] == "adapt"
    assert len(um["trials"][0]["compared_files"]) == 8          # every stage's checkpoint and model
    hf = result["crash"]["train_headfreeze.py"]["trials"][0]
    assert hf["switch"] == 1 and hf["planned"] == "at" and hf["kill_after_iteration"] == 1
    bad = [r for r in result["probes"] if not r["ok"]]
    assert not bad, bad
    assert (tmp_path / "reliability.md").read_text().startswith("- train_tasks.py: 1 of 1")
    assert not any(os.path.isdir(tmp_path / n / "reference") for n in result["crash"])   # GBs, removed
