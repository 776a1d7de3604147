"""The shared flag vocabulary (docs/design.md, "One vocabulary of flags"): every script speaks the same flags."""
import argparse

import pytest

from lib.args import add_common_args, parse

# The flags every training script must share (docs/design.md, "One vocabulary of flags").
VOCABULARY = ("--src --tgt --data-root --backbone --pretrained --size --batch-size --iters --lr "
              "--workers --device --amp --channels-last --seed --deterministic --output-dir "
              "--resume --eval-every --save-every").split()


def test_every_shared_flag_is_defined():
    parser = add_common_args(argparse.ArgumentParser())
    defined = {opt for action in parser._actions for opt in action.option_strings}
    assert set(VOCABULARY) <= defined


def test_defaults_are_the_embedded_run():
    args = parse(add_common_args(argparse.ArgumentParser()), [])
    assert (args.src, args.tgt, args.size, args.amp) == ("proc-a", "proc-b", [128, 256], "off")


@pytest.mark.parametrize("argv, message", [
    (["--iters", "0"], "--iters must be positive"),
    (["--batch-size", "-1"], "--batch-size must be positive"),
    (["--size", "0", "64"], "--size H W must be positive"),
    (["--proc-length", "0"], "--proc-length must be positive"),
    (["--eval-batches", "0"], "--eval-batches must be positive"),
    (["--workers", "-1"], "--workers must be 0 or more"),
    (["--stop-at", "-1"], "--stop-at must be 0 or more"),
    (["--lr", "-1"], "--lr must be positive"),
])
def test_bad_values_stop_with_one_error_line_and_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(add_common_args(argparse.ArgumentParser()), argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"error: {err[7:]}" and message in err
    assert err.count("\n") == 1


def test_output_dir_naming_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit):
        parse(add_common_args(argparse.ArgumentParser()), ["--output-dir", str(tmp_path / "f")])
    assert "is a file, not a folder" in capsys.readouterr().err


def test_every_width_flag_must_be_positive_and_smoke_caps_it():
    """check_common_args covers each script's --*-width; --smoke caps them at 16 and shrinks the run."""
    from lib.args import apply_preset
    from lib.engine import UserError
    import train_dada
    parser = train_dada.get_args_parser()
    with pytest.raises(UserError, match="--d-width must be positive, got 0"):
        apply_preset(parser.parse_args(["--d-width", "0"]), train_dada.PRESETS, ["proc-a", "proc-b"], log=None)
    args = apply_preset(parser.parse_args(["--smoke", "--d-width", "64", "--iters", "50"]), train_dada.PRESETS,
                        ["proc-a", "proc-b"], log=None)
    assert (args.d_width, args.iters, args.backbone, args.eval_batches) == (16, 2, "resnet-tiny", 1)
