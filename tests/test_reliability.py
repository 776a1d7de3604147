"""tools/reliability_probe.py end to end: a run killed with SIGKILL and resumed ends bit-identical
to an uninterrupted one, leaves no temporary file once it writes again; every bad input of the
probe list stops with exit code 2 and an `error:` line before any run folder exists."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import reliability_probe  # noqa: E402


def test_kill_resume_and_bad_inputs(tmp_path):
    args = reliability_probe.get_args_parser().parse_args(
        ["--trials", "1", "--scripts", "train_tasks.py", "--out", str(tmp_path)])
    result = reliability_probe.main(args)
    t = result["crash"]["train_tasks.py"]["trials"][0]
    assert t["resume_exit"] == 0 and t["bit_identical"], t
    assert t["checkpoint_loadable"] is not False and t["temp_files_after_resume"] == 0
    bad = [r for r in result["probes"] if not r["ok"]]
    assert not bad, bad
    assert (tmp_path / "reliability.md").read_text().startswith("- train_tasks.py: 1 of 1")
