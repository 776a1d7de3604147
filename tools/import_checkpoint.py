"""Convert an official DADA / AdvEnt checkpoint (valeoai/DADA, valeoai/ADVENT: a plain state
dict of DeepLab-v2 ResNet-101, possibly with "module." prefixes) into this repository's
checkpoint format, so evaluate.py scores it like any other run.

Usage:
    python tools/import_checkpoint.py synthia2cityscapes_dada.pth --out runs/dada_official.pth
    python tools/import_checkpoint.py advent.pth --out runs/advent_official.pth --no-depth
    python evaluate.py --checkpoint runs/dada_official.pth --data-root DATA

Keys are renamed with lib.models.dada (official <-> ours) and loaded strictly: every tensor of
the model must come from the file and every key of the file must be used, except ADVENT's
multi-level auxiliary classifier layer5.* (unused at test time), which is dropped. The model
is built with caffe_input=True (the official weights expect BGR, 0..255, mean-subtracted
input; it converts the repository's normalised RGB). The checkpoint records tgt=cityscapes,
the class count and --resize 512 1024 (the official test input; evaluate.py resizes labels
too, whereas the official code scores logits upsampled to the 2048x1024 labels).
(evaluate.py --checkpoint also accepts the official .pth directly, through the same mapping.)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import engine  # noqa: E402
from lib.args import new_parser  # noqa: E402
from lib.models import model_spec  # noqa: E402
from lib.models.dada import import_args, official_to_net, read_official_state  # noqa: E402

SCRIPT = "import_checkpoint.py"


def get_args_parser(add_help=True):
    parser = new_parser(__doc__, add_help)
    parser.add_argument("official", help="the official .pth (a state dict)")
    parser.add_argument("--out", required=True, help="where to write the converted checkpoint")
    parser.add_argument("--classes", type=int, default=16, help="class count of the file (default: %(default)s)")
    parser.add_argument("--no-depth", action="store_true",
                        help="the file is plain DeepLab-v2 (AdvEnt / source-only), without DADA's depth block")
    parser.add_argument("--backbone", default="resnet101", choices=["resnet101", "resnet50", "resnet18"])
    return parser


def main(args):
    state = read_official_state(args.official, flag="checkpoint")
    net, kwargs = official_to_net(state, args.official, classes=args.classes, depth=not args.no_depth,
                                  backbone=args.backbone)
    spec = model_spec("dada", **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    engine.save_checkpoint(args.out, script=SCRIPT, iteration=0, args=import_args(args.official, args.classes),
                           models={"model": net}, model_specs={"model": spec},
                           extra={"inference_model": "model", "imported_from": os.path.abspath(args.official)})
    print(f"wrote {args.out}: DeepLab-v2 {kwargs['backbone']}, {kwargs['num_classes']} classes, "
          f"depth block {'on' if kwargs['depth_block'] else 'off'}")
    return args.out


if __name__ == "__main__":
    engine.cli(main, get_args_parser().parse_args())
