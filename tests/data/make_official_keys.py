"""Write deeplabv2_r101_keys.json and dada_r101_keys.json: the (key, shape) list of the official
state dicts, enumerated from the official model definitions' construction rules, independently
of lib/models (so the tests compare our mapping against the official layout, not against itself).

    python tests/data/make_official_keys.py

Rules followed (valeoai/ADVENT advent/model/deeplabv2.py, valeoai/DADA dada/model/deeplabv2_depth.py):
- ResNetMulti: conv1 7x7 3->64 (no bias), bn1; layer1..4 = _make_layer(Bottleneck, planes
  64/128/256/512, blocks 3/4/23/3); a Bottleneck has conv1 1x1, bn1, conv2 3x3, bn2, conv3 1x1
  (x4 channels), bn3, no conv bias; the first block of every layer has downsample.0 (1x1 conv)
  and downsample.1 (BN) (channels change, or dilation 2 / 4);
- multi_level=False (DADA's config): no layer5; layer6 = ClassifierModule(2048, [6, 12, 18, 24],
  num_classes) = conv2d_list.0..3, 3x3 with bias;
- DADA adds enc4_1 (1x1 2048->512), enc4_2 (3x3 512->512), enc4_3 (1x1 512->128),
  dec4 (1x1 128->2048), all with bias, registered after layer6;
- BatchNorm2d(affine=True) saves weight, bias, running_mean, running_var, num_batches_tracked
  (the last since torch 0.4.1, a 0-d tensor), in that order.
Keys appear in registration order, as nn.Module.state_dict() lists them.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = {
    "deeplabv2": "valeoai/ADVENT advent/model/deeplabv2.py (commit 7d6f78db), "
                 "get_deeplab_v2(num_classes=16, multi_level=False)",
    "dada": "valeoai/DADA dada/model/deeplabv2_depth.py (commit 9d0f015b), "
            "get_deeplab_v2_depth(num_classes=16, multi_level=False)",
}


def conv(name, cin, cout, k, bias=False):
    """Keys of an nn.Conv2d."""
    keys = [(f"{name}.weight", [cout, cin, k, k])]
    return keys + ([(f"{name}.bias", [cout])] if bias else [])


def bn(name, c):
    """Keys of an affine nn.BatchNorm2d."""
    return [(f"{name}.{p}", [c]) for p in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{name}.num_batches_tracked", [])]


def bottleneck(name, inplanes, planes, downsample):
    """Keys of ADVENT's Bottleneck (expansion 4)."""
    keys = conv(f"{name}.conv1", inplanes, planes, 1) + bn(f"{name}.bn1", planes)
    keys += conv(f"{name}.conv2", planes, planes, 3) + bn(f"{name}.bn2", planes)
    keys += conv(f"{name}.conv3", planes, planes * 4, 1) + bn(f"{name}.bn3", planes * 4)
    if downsample:
        keys += conv(f"{name}.downsample.0", inplanes, planes * 4, 1) + bn(f"{name}.downsample.1", planes * 4)
    return keys


def deeplabv2_keys(num_classes=16, layers=(3, 4, 23, 3)):
    """ResNetMulti(Bottleneck, layers, num_classes, multi_level=False).state_dict() keys and shapes."""
    keys = conv("conv1", 3, 64, 7) + bn("bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for b in range(blocks):
            keys += bottleneck(f"layer{i + 1}.{b}", inplanes, planes, downsample=b == 0)
            inplanes = planes * 4
    for j in range(4):
        keys += conv(f"layer6.conv2d_list.{j}", 2048, num_classes, 3, bias=True)
    return keys


def dada_keys(num_classes=16):
    """ResNetMultiDepth: the DeepLab-v2 keys, then enc4_1, enc4_2, enc4_3, dec4."""
    keys = deeplabv2_keys(num_classes)
    keys += conv("enc4_1", 2048, 512, 1, True) + conv("enc4_2", 512, 512, 3, True)
    return keys + conv("enc4_3", 512, 128, 1, True) + conv("dec4", 128, 2048, 1, True)


def write(name, keys):
    """Write one JSON file with its provenance."""
    doc = {
        "derived_from": SOURCES[name.split("_")[0]],
        "how": "enumerated by tests/data/make_official_keys.py from the official module definitions "
               "(see its docstring); num_batches_tracked is present in files saved with torch >= 0.4.1 "
               "and may be absent from older files (the mapping accepts both)",
        "num_classes": 16,
        "num_keys": len(keys),
        "num_parameters": sum(_numel(s) for k, s in keys if not k.endswith(("running_mean", "running_var",
                                                                                "num_batches_tracked"))),
    }
    head = json.dumps(doc, indent=1)[:-2]   # without the closing brace: the keys follow, one a line
    rows = ",\n".join(" " + json.dumps([k, s]) for k, s in keys)
    with open(os.path.join(HERE, f"{name}_keys.json"), "w") as f:
        f.write(f'{head},\n "keys": [\n{rows}\n ]\n}}\n')


def _numel(shape):
    """Product of a shape."""
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    write("deeplabv2_r101", deeplabv2_keys())
    write("dada_r101", dada_keys())
