"""Presets (lib/args.py): the paper's experiment on real data, the CPU run on the procedural
benchmark, an explicit flag always winning; printed, recorded in args.json, shown in --help."""
import json

import pytest

import train_tasks
import train_transfer
from lib.args import apply_preset

# The usage line the README promises.
PROMISED = ["--src", "carla", "--tgt", "cityscapes", "--aux", "edge"]


def resolve(module, argv, **stage1):
    args = module.get_args_parser().parse_args(argv)
    for k, v in stage1.items():          # train_transfer takes its datasets from stage 1
        setattr(args, k, v)
    lines = []
    apply_preset(args, module.PRESETS, [args.src, args.tgt], log=lambda *a, **k: lines.append(a[0]))
    return args, lines


def test_promised_usage_line_resolves_to_the_paper_values():
    args, lines = resolve(train_tasks, PROMISED)
    assert args.preset_resolved == "paper"
    # Sec. 4, official ICCV code (train_task.py, scripts/all.sh, eval_task.py, core/models.py).
    assert (args.backbone, args.pretrained, args.output_stride, args.classes) == ("resnet50", "none", 16, 11)
    assert (args.size, args.batch_size, args.lr) == ([512, 512], 8, 1e-4)
    assert (args.iters, args.n1_iters, args.n2_iters) == (150000, None, 25000)   # Dep->Sem
    assert train_tasks.net_iters(args) == (150000, 25000) and train_tasks.total_iters(args) == 150000
    assert (args.decoder_width, args.save_every, args.focal_at_eval, args.edges) == (128, 5000, True, "cache")
    assert args.photometric is True and args.lambda_aux == 0.5 and args.lambda_nda == 0.001
    assert lines == [lines[0]] and lines[0].startswith("preset auto -> paper: --backbone resnet50")
    assert "--lr 0.0001" in lines[0] and "--n2-iters 25000" in lines[0]


def test_sem_to_dep_keeps_the_short_schedule_on_n2():
    """scripts/all.sh ties the counts to the roles (source_task / target_task): N1 150k, N2 25k."""
    args, _ = resolve(train_tasks, PROMISED + ["--task1", "semantic", "--task2", "depth"])
    assert train_tasks.net_iters(args) == (150000, 25000)
    args, _ = resolve(train_tasks, PROMISED + ["--iters", "1000"])     # one length for both
    assert train_tasks.net_iters(args) == (1000, 1000)


def test_no_arguments_resolve_to_the_cpu_run():
    args, lines = resolve(train_tasks, [])
    assert args.preset_resolved == "cpu" and lines[0].startswith("preset auto -> cpu:")
    assert " --no-focal-at-eval " in lines[0] and " --n2-iters unset " in lines[0]   # as typed
    assert (args.backbone, args.size, args.batch_size, args.lr, args.iters) == ("resnet18", [64, 128], 4, 1e-3, 250)
    assert (args.decoder_width, args.save_every, args.focal_at_eval, args.edges) == (64, 250, False, "compute")
    assert train_tasks.net_iters(args) == (250, 250)
    s2, _ = resolve(train_transfer, [], src="proc-a", tgt="proc-b")
    assert (s2.lr, s2.iters, s2.batch_size, s2.eval_every, s2.photometric) == (1e-3, 600, 1, 300, False)


def test_stage2_paper_preset_follows_the_stage1_datasets():
    args, _ = resolve(train_transfer, [], src="carla", tgt="cityscapes")
    # scripts/all.sh and train_transfer.py of the official code; augmentation as in stage 1.
    assert (args.lr, args.batch_size, args.iters, args.save_every, args.photometric) == (1e-5, 1, 100000, 5000, True)


@pytest.mark.parametrize("argv, key, value", [
    (PROMISED + ["--lr", "0.5"], "lr", 0.5),                    # over the paper preset
    (["--preset", "paper", "--iters", "7"], "iters", 7),        # procedural data, paper asked for
    (PROMISED + ["--lr", "0.001"], "lr", 1e-3),                 # equal to the cpu value, still typed
    (PROMISED + ["--size", "64", "128"], "size", [64, 128]),
    (PROMISED + ["--no-focal-at-eval"], "focal_at_eval", False),
])
def test_an_explicit_flag_wins_over_either_preset(argv, key, value):
    args, lines = resolve(train_tasks, argv)
    assert getattr(args, key) == value
    assert key not in args.preset_values and f"--{key.replace('_', '-')}" in lines[0].split("(given:")[1]


def test_preset_paper_on_procedural_data_and_cpu_on_real_data():
    assert resolve(train_tasks, ["--preset", "paper"])[0].backbone == "resnet50"
    assert resolve(train_tasks, ["--preset", "cpu"] + PROMISED)[0].backbone == "resnet18"


def test_help_shows_both_defaults_with_their_source():
    text = " ".join(train_tasks.get_args_parser().format_help().split())
    assert "[paper: 0.0001 (train_task.py: Adam 1e-4, poly 0.9); cpu: 0.001]" in text
    assert "[paper: 512 512 (official ICCV code, scripts/all.sh: 512x512 crops); cpu: 64 128]" in text
    assert ("[paper: depends on the tasks (scripts/all.sh: N2 (the target task) 25k steps, a separate run "
            "there; ours: N2's share of the journal's simultaneous scheme); cpu: None]") in text
    text2 = " ".join(train_transfer.get_args_parser().format_help().split())
    assert "[paper: 1e-05 (official ICCV code, scripts/all.sh: Adam 1e-5, poly 0.9); cpu: 0.001]" in text2


def test_the_run_prints_the_preset_first_and_records_it(tmp_path, capsys):
    argv = ["--size", "32", "64", "--batch-size", "2", "--proc-length", "4", "--workers", "0",
            "--eval-batches", "1", "--device", "cpu", "--iters", "1", "--output-dir", str(tmp_path)]
    train_tasks.main(train_tasks.get_args_parser().parse_args(argv))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("preset auto -> cpu: --backbone resnet18")
    saved = json.load(open(tmp_path / "args.json"))
    assert saved["preset"] == "auto" and saved["preset_resolved"] == "cpu"
    assert saved["preset_values"]["lr"] == 1e-3 and "iters" not in saved["preset_values"]
    assert "iters" in saved["explicit"] and saved["decoder_width"] == 64
