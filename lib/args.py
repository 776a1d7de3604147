"""The one flag vocabulary shared by every training script (docs/design.md, "One vocabulary of flags").

Scripts call `add_common_args(parser)` and then change what differs with
`parser.set_defaults(...)`, so `--src`, `--iters`, `--amp` ... mean the same thing everywhere
and shell loops over scripts keep working.

Presets (docs/design.md, "Presets"): each script declares one table at its top,

    PRESETS = {  # flag dest: (paper value, its source, cpu value)
        "lr": (1e-4, "official code train_task.py", 1e-3), ...}

and calls `apply_preset(args, PRESETS, datasets)` first thing in main(). `--preset paper`
gives the paper's experiment, `--preset cpu` the embedded benchmark's small run, `--preset
auto` (default) `cpu` when every dataset of the run is procedural and `paper` otherwise. A
flag given on the command line always wins; the parser records which were given.
"""
import argparse
import os
import sys


def add_data_args(parser, src="proc-a", tgt="proc-b"):
    """Dataset flags, shared with evaluate.py."""
    from lib.data import DATASETS  # late import: lib.data imports the engine
    listing = "; ".join(f"{k}: {e.description}" for k, e in DATASETS.items())
    g = parser.add_argument_group("data", f"datasets: {listing}")
    g.add_argument("--src", default=src, help="source domain dataset name (default: %(default)s)")
    g.add_argument("--tgt", default=tgt, help="target domain dataset name (default: %(default)s)")
    g.add_argument("--data-root", default=None,
                   help="folder holding one sub-folder per real dataset (not needed for proc-*)")
    g.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"),
                   help="training crop (real data) or rendering size (procedural) (default: %(default)s)")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    g.add_argument("--proc-length", type=int, default=None,
                   help="override the length of procedural splits (e.g. for quick runs)")
    g.add_argument("--src-root", default=None, help="folder of the --src dataset (default: DATA_ROOT/<its folder>)")
    g.add_argument("--tgt-root", default=None, help="folder of the --tgt dataset (default: DATA_ROOT/<its folder>)")
    g.add_argument("--classes", type=int, default=None,
                   help="class map of the semantic labels: 19, 16, 13, 7 or 11 where the dataset has it "
                        "(default: the dataset's first)")
    g.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize images and labels to H W before cropping (default: native size)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                   help="random horizontal flips at training")
    g.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=False,
                   help="AT/DT's random gamma / brightness / colour augmentation at training")
    g.add_argument("--edges", default="compute", choices=["compute", "cache"],
                   help="edge labels: compute missing ones with the built-in detector (a substitute), "
                        "or require the cache tools/make_edges.py writes (e.g. from an external "
                        "detector's maps with --from-dir) (default: %(default)s)")
    g.add_argument("--focal-ref", type=float, default=None, metavar="PIXELS",
                   help="express depth labels as seen by a camera of this focal length (ours: AT/DT "
                        "rescales predictions at evaluation instead, train_tasks.py --focal-at-eval; "
                        "scores are converted back to metres)")
    g.add_argument("--carla-focal", type=float, default=None, metavar="PIXELS",
                   help="focal length of the CARLA renders at their native width (default: 859.238, "
                        "AT/DT's, which is 2048 / (2 tan 50 deg): 2048-px-wide renders with a "
                        "100-degree field of view; renders of width W and field of view V have "
                        "W / (2 tan(V / 2)))")
    g.add_argument("--kitti-protocol", default=None, choices=["annotated", "eigen"],
                   help="KITTI depth (kitti_depth) labels: annotated = the annotated depth maps, KB crop "
                        "352x1216 (652 Eigen test frames); eigen = Eigen et al.'s protocol, raw "
                        "velodyne LiDAR projected to the image, scored at its own resolution in the Garg "
                        "crop (all 697 frames; cap: --max-depth) (default: annotated; evaluate.py: as "
                        "the run scored KITTI, else annotated)")
    return g


def add_common_args(parser):
    """Every flag the training scripts share; defaults are the CPU-friendly embedded run."""
    parser.add_argument("--preset", default="auto", choices=["auto", "paper", "cpu"],
                        help="default values: the paper's experiment, the embedded CPU run, or "
                             "auto = cpu when every dataset is procedural (proc-*), else paper. "
                             "Flags given explicitly always win (default: %(default)s)")
    add_data_args(parser)
    g = parser.add_argument_group("model")
    g.add_argument("--backbone", default="resnet18",
                   choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet-tiny"],
                   help="resnet-tiny: one block per stage at widths 16-128, for --smoke and tests")
    g.add_argument("--pretrained", default="none",
                   help="none | imagenet (torchvision download) | PATH to a local checkpoint")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=4, help="images per process and domain")
    g.add_argument("--iters", type=int, default=1000, help="training iterations")
    g.add_argument("--lr", type=float, default=1e-4, help="base learning rate")
    g.add_argument("--poly-power", type=float, default=0.9, help="poly schedule power")
    g = parser.add_argument_group("engine")
    g.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    g.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="autocast dtype; fp16 uses one GradScaler shared by all optimizers (fp16 on the "
                        "CPU is slow: it is there for the tests)")
    g.add_argument("--channels-last", action="store_true", help="use the channels_last memory format")
    g.add_argument("--sync-bn", action="store_true", help="convert BatchNorm to SyncBatchNorm under DDP")
    g.add_argument("--compile", action="store_true", help="wrap models with torch.compile")
    g.add_argument("--seed", type=int, default=0, help="base seed (+ rank, + worker)")
    g.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True), slower but repeatable")
    g.add_argument("--output-dir", default=None, help="run folder (default: runs/<script>)")
    g.add_argument("--resume", default=None,
                   help="checkpoint to continue from, or 'auto' for OUTPUT_DIR/checkpoint.pth")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --output-dir that holds a run (default: refuse)")
    g.add_argument("--stop-at", type=int, default=None, metavar="ITER",
                   help="checkpoint and exit after iteration ITER without finishing (time-limited "
                        "jobs); continue later with --resume auto")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate every N iterations (0: at the end)")
    g.add_argument("--save-every", type=int, default=500, help="checkpoint every N iterations")
    g.add_argument("--log-every", type=int, default=20, help="console / log.jsonl every N iterations")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write every logged term, learning rate and evaluation to "
                        "OUTPUT_DIR/tensorboard (needs the tensorboard package; log.jsonl stays the record)")
    g.add_argument("--eval-batches", type=int, default=None,
                   help="cap on validation batches (default: the whole split)")
    g.add_argument("--smoke", action="store_true",
                   help="an end-to-end check of a command, not an experiment: resnet-tiny from "
                        "scratch, every --*-width at most 16, every size flag / 16 (multiples of 8, "
                        "at least 32), batches of at most 2, 2 iterations (per stage), one evaluation batch, no workers; "
                        "everything else (class maps, per-domain resizes, label resolution, "
                        "selection, seeds) stays as the preset and the flags say "
                        "(experiments/*.sh: SMOKE=1)")
    return parser


def check_common_args(args):
    """Reject flag values that would fail later with an obscure error (one line each)."""
    from lib.engine import UserError
    positive = ("iters", "batch_size", "proc_length", "eval_batches", "log_every",
                *(name for name in vars(args) if name.endswith("_width")))   # every script's --*-width
    for name in positive:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("workers", "stop_at", "save_every", "eval_every"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
    if getattr(args, "lr", None) is not None and not args.lr > 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    for name in ("size", "resize"):
        value = getattr(args, name, None)
        if value is not None and min(value) <= 0:
            raise UserError(f"--{name} H W must be positive, got {value}")
    out = getattr(args, "output_dir", None)
    if out and os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output-dir {out} is a file, not a folder")
    return args


def parse(parser, argv=None):
    """Parse argv (None: sys.argv) and check the shared flags; a bad value is one `error:`
    line and exit code 2, as argparse's own errors."""
    from lib.engine import UserError
    args = parser.parse_args(argv)
    try:
        return check_common_args(args)
    except UserError as err:
        parser.exit(2, f"error: {err}\n")


def new_parser(description, add_help=True):
    """A parser with the script's docstring that records which flags were given explicitly."""
    return PresetParser(description=description, add_help=add_help,
                        formatter_class=argparse.RawDescriptionHelpFormatter)


class PresetParser(argparse.ArgumentParser):
    """An ArgumentParser whose namespaces carry `explicit`: the dests given on the command line,
    so a preset never overrides what the user typed (equal to a default or not)."""

    def parse_known_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        ns, rest = super().parse_known_args(argv, namespace)
        ns.explicit = sorted(self._given(argv))
        return ns, rest

    def _given(self, argv):
        """Parse again with every default suppressed: what remains was typed."""
        saved = [(a, a.default) for a in self._actions]
        saved_defaults, self._defaults = self._defaults, {}
        try:
            for a in self._actions:
                a.default = argparse.SUPPRESS
            probe, _ = super().parse_known_args(argv, argparse.Namespace())
        finally:
            for a, d in saved:
                a.default = d
            self._defaults = saved_defaults
        return set(vars(probe))


def set_presets(parser, presets):
    """Make the cpu values the parser's defaults and show both presets in each flag's --help."""
    actions = {a.dest: a for a in parser._actions}
    for dest, (paper, source, cpu) in presets.items():
        if dest not in actions:
            raise KeyError(f"preset key {dest!r} is not a flag of this parser")
        a = actions[dest]
        a.default = cpu
        parser._defaults.pop(dest, None)   # set_defaults() would otherwise win over a.default
        shown = "depends on the tasks" if callable(paper) else _show(paper)
        text = (a.help or "").replace("(default: %(default)s)", "").rstrip()
        a.help = f"{text} [paper: {_esc(shown)} ({_esc(source)}); cpu: {_esc(_show(cpu))}]"
    return parser


def _esc(text):
    return str(text).replace("%", "%%")   # argparse formats help strings with %


def _show(value):
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _as_flag(dest, value):
    """How the value would be typed: --flag V, --flag / --no-flag for switches, unset for None."""
    flag = "--" + dest.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {'unset' if value is None else _show(value)}"


def is_procedural(name):
    """The embedded benchmark's datasets need no files (lib/data: proc-a, proc-b)."""
    return name is None or str(name).startswith("proc-")


def apply_preset(args, presets, datasets, log=print):
    """Fill every flag not given explicitly from the chosen preset; record and print the choice.

    `datasets`: the dataset names of the run (auto picks cpu only if all are procedural).
    Paper values may be callables of args (e.g. a schedule that depends on --task1)."""
    chosen = args.preset
    if chosen == "auto":
        chosen = "cpu" if all(is_procedural(d) for d in datasets) else "paper"
    explicit = set(getattr(args, "explicit", ()))
    applied = {}
    for dest, (paper, _source, cpu) in presets.items():
        if dest in explicit:
            continue
        value = cpu if chosen == "cpu" else (paper(args) if callable(paper) else paper)
        setattr(args, dest, list(value) if isinstance(value, tuple) else value)
        applied[dest] = getattr(args, dest)
    args.preset_resolved, args.preset_values = chosen, applied
    apply_smoke(args)
    check_common_args(args)
    if log is not None and os.environ.get("RANK", "0") == "0":   # once under torchrun
        how = f"auto -> {chosen}" if args.preset == "auto" else chosen
        given = [d for d in presets if d in explicit]
        log(f"preset {how}: " + " ".join(_as_flag(k, v) for k, v in applied.items())
            + (f" (given: {' '.join('--' + d.replace('_', '-') for d in given)})" if given else ""),
            flush=True)
    return args


SMOKE_SIZES = ("size", "resize", "src_resize", "tgt_resize")   # the H W flags --smoke shrinks
SMOKE_WIDTH = 16


def apply_smoke(args):
    """--smoke: shrink the run (help of --smoke), after the preset and over explicit flags too, so
    that a paper command runs end to end in seconds on the tiny trees of tests/trees.py."""
    if not getattr(args, "smoke", False):
        return args
    for dest in SMOKE_SIZES:
        if getattr(args, dest, None):
            setattr(args, dest, [max(32, -(-v // 128) * 8) for v in getattr(args, dest)])
    args.backbone, args.pretrained, args.workers, args.eval_batches = "resnet-tiny", "none", 0, 1
    args.batch_size = min(args.batch_size, 2)
    for dest, value in vars(args).copy().items():
        if dest.endswith("_width") and isinstance(value, int):   # decoders, heads, critics
            setattr(args, dest, min(value, SMOKE_WIDTH))
        if dest == "iters" or (dest.endswith("_iters") and isinstance(value, int)):
            setattr(args, dest, 2)
    if getattr(args, "eval_every", 0):
        args.eval_every = 1          # a selection (SELECT=1) still selects
    return args
