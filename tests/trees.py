"""Tiny dataset trees in every real on-disk layout, for the tests (and smoke runs) of lib/data.

One writer per dataset layout, each writing ROOT/<the dataset's folder> with the official
names, bit depths and encodings that lib/data/<dataset>.py reads (docs/reference.md,
"Datasets"), at about 1/16 of the real resolution so that paper crop sizes divided by 16 fit:

    cityscapes  64x128   leftImg8bit, gtFine labelIds (8-bit), disparity (16-bit), camera json
    synthia     48x80    RGB, GT/LABELS (16-bit, class in channel 0), Depth/Depth (16-bit cm)
    carla       64x128   {split}/rgb|semantic|depth or AT/DT list files {split}.txt
    gta5        66x120   images, palette labelIds, optional {split}.txt lists
    synscapes   45x90    img/rgb, img/class, img/depth/*.exr (or .npy), numeric-id splits
    mapillary   varied   training|validation/images/*.jpg + palette labels, sizes per frame
    isprs       32x32    patches/{split}/image|label|ndsm, cut by tools/prepare_isprs.py
    isprs_tiles 20x24    the official tiles tools/prepare_isprs.py reads
    nyuv2       30x40    {split}/image|depth|label40|normals as tools/prepare_nyuv2.py writes
    kitti       375x1242 annotated depth + raw RGB + velodyne scans + calibration + Eigen lists
                (full size)
    folder      32x64    the generic layout, dataset.json, edges, keypoints, keypoint_depth

KITTI is the exception: its loader cuts every frame to the fixed 352x1216 benchmark crop
(lib.data.kitti.KB_CROP) before any --resize and refuses smaller frames, so the tree has the
real 375x1242 size; its images are noise-free blocks and its depth LiDAR-like scan lines, which
PNG compresses to a few kB. Its velodyne scans (--kitti-protocol eigen) are a few thousand
points, back-projected from chosen pixels and depths through the tree's calibration, so the
depth map they project to is known exactly (Frame.arrays["lidar"]).

Every writer takes `size=` (H, W), `splits=`, `seed=` and `frames=`: a count per split, a
sequence of frame stems (every split), or a dict split -> count or stems. Content is seeded
from (seed, dataset, split, frame index), so a tree is the same on every run. Label maps are
piecewise constant (blocks of valid ids of the format) and images follow them, so a model can
learn something and PNGs stay small. Arrays that a test wants to choose by hand are given as
overrides, AS STORED on disk (raw ids, 16-bit codes, encoded normals): a numpy array for every
frame, or a list with one array per frame.

Each writer returns a Tree: .root (the dataset folder) and .frames, one Frame per written
sample with .split, .name (the loader's record name), .paths and .arrays (what was written).
write_all(root) writes every registered dataset under one data root plus the `folder` trees
the experiments scripts name as separate roots (pbrs, gta5d, indoor_src, sfsyn, sfsyn_front,
facewh) and returns {name: path}.
"""
import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import prepare_isprs  # noqa: E402  (tools/ is not a package)
import prepare_nyuv2  # noqa: E402

from lib.data import isprs as _isprs  # noqa: E402
from lib.data.labels import CLASS_NAMES, LABELS  # noqa: E402
from lib.data.nyuv2 import CLASSES_13, CLASSES_40, encode_normals  # noqa: E402

FACE_KEYPOINTS = 5         # K of the face trees of write_all (the paper's 68 is not needed)


# ----------------------------------------------------------------------------- what was written
@dataclass
class Frame:
    split: str
    name: str                       # the record name the loader gives it: key/split/stem
    paths: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


@dataclass
class Tree:
    root: str                       # the dataset's folder, e.g. DATA/cityscapes
    frames: list = field(default_factory=list)

    def split(self, name):
        return [f for f in self.frames if f.split == name]


# ----------------------------------------------------------------------------- file writers
def _dirs(path):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    return str(path)


def save(path, array):
    """PIL's encoding of an array: uint8 HxW -> 8-bit grey, HxWx3 -> RGB, uint16 HxW -> 16-bit
    grey (by the suffix: .png, .jpg, .tif, .bmp). Returns the path."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"save(): uint8 or uint16 arrays only, got {array.dtype}")
    Image.fromarray(array).save(_dirs(path))
    return str(path)


def save_palette(path, ids, palette=None):
    """An 8-bit palette ("P") PNG whose pixel value is the id; the palette (default: the
    Cityscapes label colours) differs from the ids, so a reader of colours would be wrong."""
    img = Image.fromarray(np.asarray(ids, dtype=np.uint8), "P")
    img.putpalette(palette if palette is not None else CITYSCAPES_PALETTE)
    img.save(_dirs(path))
    return str(path)


def write_png16(path, arr):
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): grey (HxW) or RGB (HxWx3)."""
    arr = np.asarray(arr, dtype=">u2")
    h, w = arr.shape[:2]
    rows = b"".join(b"\0" + arr[y].tobytes() for y in range(h))      # filter 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    with open(_dirs(path), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))
    return str(path)


def write_exr(path, channels, lines=16):
    """A scan-line OpenEXR file with FLOAT channels and ZIP compression, after the OpenEXR
    file-layout spec: header, chunk offset table, chunks of 16 lines (zlib over the two-half
    interleaved bytes with the +128 difference predictor; raw when that does not shrink)."""
    names = sorted(channels)
    h, w = channels[names[0]].shape

    def attr(name, kind, data):
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(data)) + data

    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", 2, 0, 1, 1) for n in names) + b"\0"
    box = struct.pack("<4i", 0, 0, w - 1, h - 1)
    header = (struct.pack("<ii", 20000630, 2) + attr("channels", "chlist", chlist)
              + attr("compression", "compression", b"\x03") + attr("dataWindow", "box2i", box)
              + attr("displayWindow", "box2i", box) + attr("lineOrder", "lineOrder", b"\0")
              + attr("pixelAspectRatio", "float", struct.pack("<f", 1))
              + attr("screenWindowCenter", "v2f", struct.pack("<2f", 0, 0))
              + attr("screenWindowWidth", "float", struct.pack("<f", 1)) + b"\0")
    chunks = []
    for y in range(0, h, lines):
        raw = b"".join(channels[n][r].astype("<f4").tobytes() for r in range(y, min(y + lines, h))
                       for n in names)
        b = np.frombuffer(raw, np.uint8).astype(np.int64)
        t = np.concatenate([b[0::2], b[1::2]])
        d = t.copy()
        d[1:] = (t[1:] - t[:-1] + 128) % 256
        data = zlib.compress(d.astype(np.uint8).tobytes())
        data = data if len(data) < len(raw) else raw
        chunks.append(struct.pack("<ii", y, len(data)) + data)
    offsets, pos = [], len(header) + 8 * len(chunks)
    for c in chunks:
        offsets.append(pos)
        pos += len(c)
    with open(_dirs(path), "wb") as f:
        f.write(header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(chunks))
    return str(path)


def write_json(path, obj):
    with open(_dirs(path), "w") as f:
        json.dump(obj, f, indent=1)
    return str(path)


def write_garbage(path):
    """A file that is no image (nor JSON, nor EXR) at all."""
    with open(_dirs(path), "wb") as f:
        f.write(b"this is not an image" * 3)
    return str(path)


def rgb(size, seed=0):
    """Uniform noise uint8 HxWx3 (for tests that only need some image)."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- content
CITYSCAPES_PALETTE = [c for label in sorted(LABELS, key=lambda lab: lab.id) if label.id >= 0
                      for c in label.color]
# Valid raw ids each generated label map draws from (void ids included: they are in the format).
CS_LABEL_IDS = (0, 4, 7, 8, 11, 13, 17, 20, 21, 22, 23, 24, 26, 33)
SYNTHIA_IDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 17, 19, 21, 22)
CARLA_TAGS = tuple(range(13))                      # CARLA 0.8: 0 None .. 12 TrafficSigns
VISTAS_IDS = (0, 2, 13, 15, 17, 19, 24, 27, 29, 30, 45, 48, 55, 61, 65)
# Mapillary frame sizes, cycled: Vistas images differ in size from frame to frame.
MAPILLARY_SIZES = ((60, 80), (75, 100), (48, 90), (80, 107))
VISTAS_PALETTE = [c for j in range(256) for c in (j * 29 % 256, j * 71 % 256, 255 - j)]


def _rng(seed, *keys):
    """A Generator for (seed, dataset, split, index): stable across runs (crc32, not hash())."""
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def _blocks(rng, size, values, block=None):
    """HxW map of `values`, one draw per square block: piecewise constant like a label map."""
    h, w = size
    b = block or max(2, min(h, w) // 4)
    grid = rng.choice(np.asarray(values), size=(-(-h // b), -(-w // b)))
    return np.repeat(np.repeat(grid, b, 0), b, 1)[:h, :w]


def _photo(rng, ids, noise=16):
    """An RGB image following a label map: one colour per id, plus uniform noise up to `noise`."""
    ids = np.asarray(ids, dtype=np.int64)
    colour = np.stack([ids * 53 % 256, ids * 97 % 256, ids * 151 % 256], -1)
    noise = rng.integers(-noise, noise + 1, colour.shape)
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def _street_depth(rng, size, near=3.0, far=80.0):
    """Metres growing from `near` at the bottom row to `far` at the top, times block noise."""
    h, w = size
    rows = far - (far - near) * (np.arange(h) / max(h - 1, 1))[:, None]
    return rows * _blocks(rng, size, (0.8, 0.9, 1.0, 1.1))


def _pick(override, i):
    """The override of frame i: one array for every frame, or a list of one per frame."""
    if override is None:
        return None
    return np.asarray(override[i] if isinstance(override, (list, tuple)) else override)


def _frames(frames, split, default):
    """Stems of one split: frames is a count, stems, or {split: count or stems}."""
    if isinstance(frames, dict):
        frames = frames.get(split, 0)
    if isinstance(frames, int):
        return [default(i) for i in range(frames)]
    return list(frames)


# ----------------------------------------------------------------------------- Cityscapes
CITIES = {"train": ("aachen", "bochum", "bremen", "cologne"), "val": ("frankfurt", "lindau", "munster"),
          "test": ("berlin", "bielefeld", "bonn", "mainz"), "train_extra": ("augsburg", "bamberg")}
CITYSCAPES_CAMERA = {"baseline": 0.209313, "fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137}


def cityscapes(root, frames=2, size=(64, 128), splits=("train", "val"), seed=0, depth=True,
               labels=None, disparity=None, camera=None):
    """Cityscapes: leftImg8bit, gtFine labelIds (train, val; on test placeholders, all 0 unless
    labels is given; none on train_extra, whose labels are coarse), disparity + camera json
    (depth=False: the semantic-only download). camera: (baseline m, fx px); default the official
    camera with its intrinsics scaled to the tree's width. Frames: '{city}/{city}_{seq}_000019'.
    labels: HxW labelIds; disparity: HxW uint16 p as stored."""
    base = os.path.join(str(root), "cityscapes")
    h, w = size
    scale = w / 2048
    b, fx = camera or (CITYSCAPES_CAMERA["baseline"], CITYSCAPES_CAMERA["fx"] * scale)
    cam = {"extrinsic": {"baseline": b, "pitch": 0.038, "roll": 0.0, "yaw": -0.0195, "x": 1.7, "y": 0.1,
                         "z": 1.22},
           "intrinsic": {"fx": fx, "fy": fx if camera else CITYSCAPES_CAMERA["fy"] * scale,
                         "u0": w / 2 if camera else CITYSCAPES_CAMERA["u0"] * scale,
                         "v0": h / 2 if camera else CITYSCAPES_CAMERA["v0"] * scale}}
    tree = Tree(base)
    for split in splits:
        cities = CITIES[split]
        for i, stem in enumerate(_frames(frames, split, lambda i: f"{cities[i % len(cities)]}/"
                                         f"{cities[i % len(cities)]}_{i:06d}_000019")):
            rng = _rng(seed, "cityscapes", split, i)
            ids = _pick(labels, i)
            ids = _blocks(rng, size, CS_LABEL_IDS).astype(np.uint8) if ids is None else ids.astype(np.uint8)
            f = Frame(split, f"cityscapes/{split}/{stem}")
            f.arrays["image"] = _photo(rng, ids)
            f.paths["image"] = save(os.path.join(base, "leftImg8bit", split, stem + "_leftImg8bit.png"),
                                    f.arrays["image"])
            if split != "train_extra":
                f.arrays["semantic"] = ids if split != "test" or labels is not None else np.zeros_like(ids)
                f.paths["semantic"] = save(os.path.join(base, "gtFine", split, stem + "_gtFine_labelIds.png"),
                                           f.arrays["semantic"])
            if depth:
                p = _pick(disparity, i)
                if p is None:   # p = 256 d + 1 for d = b fx / depth; the top rows (sky) invalid (0)
                    p = np.round(b * fx / _street_depth(rng, size) * 256 + 1)
                    p[: h // 4] = 0
                f.arrays["disparity"], f.arrays["camera"] = p.astype(np.uint16), (b, fx)
                f.paths["depth"] = save(os.path.join(base, "disparity", split, stem + "_disparity.png"),
                                        f.arrays["disparity"])
                f.paths["camera"] = write_json(os.path.join(base, "camera", split, stem + "_camera.json"), cam)
            tree.frames.append(f)
    return tree


# ----------------------------------------------------------------------------- SYNTHIA
def synthia(root, frames=3, size=(48, 80), seed=0, labels=None, depth=None, depth_channels=3):
    """SYNTHIA-RAND-CITYSCAPES: RGB/, GT/LABELS/ (16-bit RGB: class, instance, 0) and
    Depth/Depth/ (16-bit centimetres, repeated in 3 channels as the official files; 1 with
    depth_channels=1). No split folders: train is every image, val the last ones.
    labels: HxW class ids or HxWx3 as stored; depth: HxW cm or HxWxC as stored."""
    base = os.path.join(str(root), "synthia")
    tree = Tree(base)
    for i, stem in enumerate(_frames(frames, "train", lambda i: f"{i:07d}")):
        rng = _rng(seed, "synthia", i)
        lab = _pick(labels, i)
        if lab is None or lab.ndim == 2:
            cls = _blocks(rng, size, SYNTHIA_IDS) if lab is None else lab
            lab = np.stack([cls, _blocks(rng, size, range(1, 40)) * (cls >= 8), np.zeros_like(cls)], -1)
        cm = _pick(depth, i)
        if cm is None:
            cm = np.round(_street_depth(rng, size) * 100)
            cm[: size[0] // 5] = 65535                     # the sky: saturated, as SYNTHIA stores it
        if cm.ndim == 2 and depth_channels == 3:
            cm = np.stack([cm] * 3, -1)
        f = Frame("train", f"synthia/train/{stem}", arrays={"semantic": lab, "depth": cm})
        f.arrays["image"] = _photo(rng, lab[..., 0])
        f.paths["image"] = save(os.path.join(base, "RGB", stem + ".png"), f.arrays["image"])
        f.paths["semantic"] = write_png16(os.path.join(base, "GT", "LABELS", stem + ".png"), lab)
        f.paths["depth"] = write_png16(os.path.join(base, "Depth", "Depth", stem + ".png"), cm)
        tree.frames.append(f)
    return tree


# ----------------------------------------------------------------------------- CARLA
def carla_depth_code(metres):
    """CARLA's 24-bit depth encoding as RGB uint8: code = round(m / 1000 * (2^24 - 1))."""
    code = np.round(np.clip(np.asarray(metres, np.float64), 0, 1000) / 1000 * (2 ** 24 - 1)).astype(np.int64)
    return np.stack([code & 255, (code >> 8) & 255, code >> 16], -1).astype(np.uint8)


def carla(root, frames=2, size=(64, 128), splits=("train", "val"), seed=0, layout="folders",
          semantic=None, depth=None):
    """CARLA renders in AT/DT's encodings: the tag in the red channel (G = B = 0, CARLA's raw
    output), 24-bit depth with the top rows at the far plane (sky). layout "folders":
    carla/{split}/{rgb,semantic,depth}/NNNNNN.png; "lists": AT/DT's carla/{split}.txt of
    `left;right;semantic;depth` over carla/{split}_episode_NNNN/MyCamera_{L,R}/... files.
    semantic, depth: HxWx3 uint8 as stored."""
    base = os.path.join(str(root), "carla")
    tree = Tree(base)
    h, _ = size
    for split in splits:
        lines = []
        for i, stem in enumerate(_frames(frames, split, lambda i: f"{i:06d}")):
            rng = _rng(seed, "carla", split, i)
            sem, dep = _pick(semantic, i), _pick(depth, i)
            if sem is None:
                sem = np.zeros((*size, 3), np.uint8)
                sem[..., 0] = _blocks(rng, size, CARLA_TAGS)
                sem[: h // 4, :, 0] = 0                    # CARLA 0.8 has no sky tag: None
            if dep is None:
                metres = _street_depth(rng, size, 2.0, 200.0)
                metres[: h // 4] = 1000.0                  # the far plane: sky
                dep = carla_depth_code(metres)
            if layout == "folders":
                rels = {k: os.path.join(split, k, stem + ".png") for k in ("rgb", "semantic", "depth")}
                name = f"carla/{split}/{stem}"
            else:
                ep = os.path.join(f"{split}_episode_{i:04d}", "MyCamera_L")
                rels = {"rgb": os.path.join(ep, stem + ".png"), "right": os.path.join(ep[:-1] + "R", stem + ".png"),
                        "semantic": os.path.join(ep, "Semantic", stem + ".png"),
                        "depth": os.path.join(ep, "Depth", stem + ".png")}
                lines.append(";".join(rels[k] for k in ("rgb", "right", "semantic", "depth")))
                name = f"carla/{split}/{os.path.splitext(rels['rgb'])[0]}"
            f = Frame(split, name, arrays={"image": _photo(rng, sem[..., 0]), "semantic": sem, "depth": dep})
            for key, rel in rels.items():
                f.paths["image" if key == "rgb" else key] = save(
                    os.path.join(base, rel), f.arrays.get(key, f.arrays["image"]))
            tree.frames.append(f)
        if layout == "lists":
            with open(_dirs(os.path.join(base, f"{split}.txt")), "w") as fh:
                fh.write("\n".join(lines) + "\n")
    return tree


# ----------------------------------------------------------------------------- GTA5
def gta5(root, frames=2, size=(66, 120), splits=("train", "val"), seed=0, lists=None, labels=None):
    """GTA5: images/NNNNN.png and labels/NNNNN.png (Cityscapes labelIds in a palette PNG with the
    Cityscapes colours, as the official labels). Numbers run on across splits; lists (default:
    when a split other than train is written) writes {split}.txt of bare numbers, as split.mat
    holds them."""
    base = os.path.join(str(root), "gta5")
    tree = Tree(base)
    lists = any(s != "train" for s in splits) if lists is None else lists
    n = 0
    for split in splits:
        numbers = []
        for i in range(len(_frames(frames, split, str))):
            n += 1
            rng = _rng(seed, "gta5", split, i)
            ids = _pick(labels, i)
            ids = _blocks(rng, size, CS_LABEL_IDS) if ids is None else ids
            f = Frame(split, f"gta5/{split}/{n:05d}", arrays={"semantic": ids.astype(np.uint8)})
            f.arrays["image"] = _photo(rng, ids)
            f.paths["image"] = save(os.path.join(base, "images", f"{n:05d}.png"), f.arrays["image"])
            f.paths["semantic"] = save_palette(os.path.join(base, "labels", f"{n:05d}.png"), ids)
            tree.frames.append(f)
            numbers.append(str(n))
        if lists:
            with open(_dirs(os.path.join(base, f"{split}.txt")), "w") as fh:
                fh.write("\n".join(numbers) + "\n")
    return tree


# ----------------------------------------------------------------------------- Synscapes
SYNSCAPES_FIRST = {"train": 1, "val": 20001, "test": 21001}     # SemiMTL's consecutive split ids


def synscapes(root, frames=2, size=(45, 90), splits=("train", "val"), seed=0, depth_format="exr",
              labels=None, depth=None):
    """Synscapes: img/rgb/N.png, img/class/N.png (labelIds), img/depth/N.exr (float metres,
    channel Z; the sky beyond 1000 m) or N.npy (depth_format="npy"); ids from each split's
    first id (train 1, val 20001, test 21001). depth: HxW float metres."""
    base = os.path.join(str(root), "synscapes", "img")
    tree = Tree(os.path.dirname(base))
    for split in splits:
        for i in range(len(_frames(frames, split, str))):
            n = SYNSCAPES_FIRST[split] + i
            rng = _rng(seed, "synscapes", split, i)
            ids, z = _pick(labels, i), _pick(depth, i)
            ids = _blocks(rng, size, CS_LABEL_IDS) if ids is None else ids
            if z is None:
                z = _street_depth(rng, size).astype(np.float32)
                z[: size[0] // 5] = 10000.0                # sky: beyond MAX_DEPTH, invalid
            f = Frame(split, f"synscapes/{split}/{n}", arrays={"semantic": ids.astype(np.uint8),
                                                               "depth": z.astype(np.float32)})
            f.arrays["image"] = _photo(rng, ids)
            f.paths["image"] = save(os.path.join(base, "rgb", f"{n}.png"), f.arrays["image"])
            f.paths["semantic"] = save(os.path.join(base, "class", f"{n}.png"), f.arrays["semantic"])
            path = os.path.join(base, "depth", f"{n}.{depth_format}")
            if depth_format == "exr":
                f.paths["depth"] = write_exr(path, {"Z": f.arrays["depth"]})
            else:
                np.save(_dirs(path), f.arrays["depth"])
                f.paths["depth"] = path
            tree.frames.append(f)
    return tree


# ----------------------------------------------------------------------------- Mapillary Vistas
def mapillary(root, frames=2, size=MAPILLARY_SIZES, splits=("train", "val"), seed=0, v2=False,
              labels=None):
    """Mapillary Vistas v1.2: {training,validation}/images/{key}.jpg and labels/{key}.png (palette
    PNG, value = v1.2 class index; v2=True: the v2.0 package's v1.2/labels/). size: one (H, W)
    for every frame, or a sequence of sizes cycled over the frames (default MAPILLARY_SIZES,
    each split starting at another one): as in the real set, frames differ in size, and each
    label has its own image's size."""
    sizes = [tuple(size)] if np.ndim(size) == 1 else [tuple(s) for s in size]
    tree = Tree(os.path.join(str(root), "mapillary"))
    for k, split in enumerate(splits):
        folder = os.path.join(tree.root, {"train": "training", "val": "validation"}[split])
        for i, stem in enumerate(_frames(frames, split, lambda i: f"{split[:2]}{i:03d}_{seed:02d}vistas")):
            hw = sizes[(i + 2 * k) % len(sizes)]
            rng = _rng(seed, "mapillary", split, i)
            ids = _pick(labels, i)
            ids = _blocks(rng, hw, VISTAS_IDS) if ids is None else ids
            f = Frame(split, f"mapillary/{split}/{stem}", arrays={"semantic": ids.astype(np.uint8)})
            f.arrays["image"] = _photo(rng, ids)
            f.paths["image"] = save(os.path.join(folder, "images", stem + ".jpg"), f.arrays["image"])
            labels_dir = os.path.join(folder, "v1.2", "labels") if v2 else os.path.join(folder, "labels")
            f.paths["semantic"] = save_palette(os.path.join(labels_dir, stem + ".png"), ids, VISTAS_PALETTE)
            tree.frames.append(f)
    return tree


# ----------------------------------------------------------------------------- ISPRS
def _isprs_content(rng, size):
    """(IRRG image, colour label, nDSM height in [0, 1]) of one tile: buildings are high."""
    ids = _blocks(rng, size, range(len(_isprs.COLOURS)))
    height = np.where(ids == 1, 0.8, np.where(ids == 3, 0.5, 0.05)) + rng.uniform(0, 0.1, size)
    return _photo(rng, ids), np.asarray(_isprs.COLOURS, np.uint8)[ids], height / height.max()


def isprs(root, key="isprs_vaihingen", frames=2, size=(32, 32), splits=("train", "test"), seed=0):
    """ISPRS Potsdam / Vaihingen patches as tools/prepare_isprs.py writes them (its
    write_patches): per split one tile of the contest's list, H x (frames * W), cut into
    `frames` patches of HxW: patches/{split}/{image,label,ndsm}/{tile}_{y}_{x}.png (colour
    labels, 16-bit nDSM v = 1 + round(h * 65534)). `val` reads `test`."""
    h, w = size
    if h != w:
        raise ValueError(f"isprs(): patches are square (prepare_isprs --patch), got size {size}")
    base = os.path.join(str(root), key)
    tree = Tree(base)
    for split in splits:
        tile = _isprs.TILES[key][split][0]
        n = len(_frames(frames, split, str))
        image, label, height = _isprs_content(_rng(seed, key, split), (h, w * n))
        out = os.path.join(base, "patches", split)
        prepare_isprs.write_patches(out, _isprs.tile_name(key, tile), (image, label, height), h, w)
        for x in range(0, w * n, w):
            stem = f"{_isprs.tile_name(key, tile)}_{0:05d}_{x:05d}"
            win = (slice(0, h), slice(x, x + w))
            f = Frame(split, f"{key}/{split}/{stem}",
                      arrays={"image": image[win], "label": label[win], "height": height[win]})
            f.paths = {k: os.path.join(out, kind, stem + ".png")
                       for k, kind in (("image", "image"), ("semantic", "label"), ("depth", "ndsm"))}
            tree.frames.append(f)
    return tree


def isprs_tiles(root, key="isprs_vaihingen", tiles=("1",), size=(20, 24), seed=0, participants=False,
                image=None, label=None, height=None):
    """The official tiles tools/prepare_isprs.py reads. Vaihingen: top/top_mosaic_09cm_area{n}.tif,
    gts_complete/ (participants=True: gts_for_participants/, train tiles only) and
    ndsm/ndsm_09cm_matching_area{n}.bmp (8-bit). Potsdam: 3_Ortho_IRRG/top_potsdam_{t}_IRRG.tif,
    5_Labels_all/ (or 5_Labels_for_participants/) top_potsdam_{t}_label.tif and
    1_DSM_normalisation/dsm_potsdam_{aa}_{bb}_normalized_lastools.jpg (zero-padded numbers).
    image, label: HxWx3 uint8; height: HxW uint8, per tile or one for all."""
    base = os.path.join(str(root), key)
    tree = Tree(base)
    for i, tile in enumerate(tiles):
        img, lab, h01 = _isprs_content(_rng(seed, key, "tile", tile), size)
        img = img if _pick(image, i) is None else _pick(image, i)
        lab = lab if _pick(label, i) is None else _pick(label, i)
        hgt = np.round(10 + 180 * h01).astype(np.uint8) if _pick(height, i) is None else _pick(height, i)
        if key == "isprs_potsdam":
            a, b = tile.split("_")
            paths = {"image": os.path.join("3_Ortho_IRRG", f"top_potsdam_{tile}_IRRG.tif"),
                     "label": os.path.join("5_Labels_for_participants" if participants else "5_Labels_all",
                                           f"top_potsdam_{tile}_label.tif"),
                     "height": os.path.join("1_DSM_normalisation",
                                            f"dsm_potsdam_{int(a):02d}_{int(b):02d}_normalized_lastools.jpg")}
        else:
            name = f"top_mosaic_09cm_area{tile}.tif"
            paths = {"image": os.path.join("top", name),
                     "label": os.path.join("gts_for_participants" if participants else "gts_complete", name),
                     "height": os.path.join("ndsm", f"ndsm_09cm_matching_area{tile}.bmp")}
        f = Frame("tile", tile, arrays={"image": img, "label": lab, "height": hgt})
        f.paths = {k: save(os.path.join(base, rel), f.arrays[k]) for k, rel in paths.items()}
        tree.frames.append(f)
    return tree


# ----------------------------------------------------------------------------- NYUv2
def nyuv2(root, frames=2, size=(30, 40), splits=("train", "test"), seed=0, normals=True,
          image=None, depth=None, label40=None):
    """The NYUv2 export of tools/prepare_nyuv2.py (its write_frame): {split}/image/NNNNN.png,
    depth/ (16-bit mm), label40/ (8-bit NYU-40, 0 unlabelled), normals/ estimated from the
    depth as the export does (normals=False: no folder, the loader estimates them; an HxWx3
    uint8 array: those encoded normals). Frame numbers (1-based .mat indices) run on across
    splits; frames may give them. depth: HxW uint16 millimetres as stored."""
    base = os.path.join(str(root), "nyuv2")
    tree = Tree(base)
    h, w = size
    n = 0
    for split in splits:
        for i, number in enumerate(_frames(frames, split, lambda i: n + i + 1)):
            rng = _rng(seed, "nyuv2", split, i)
            ids, mm, img = _pick(label40, i), _pick(depth, i), _pick(image, i)
            ids = _blocks(rng, size, range(41)) if ids is None else ids
            if mm is None:   # a room: the floor nearer at the bottom, a wall at the top
                v, u = np.mgrid[0:h, 0:w]
                mm = np.round(1000 * (1.2 + 3.0 * (1 - v / h) + 0.4 * u / w))
                mm[0, :2] = 0                              # holes Kinect leaves
            img = _photo(rng, ids) if img is None else img
            estimate = isinstance(normals, bool) and normals
            prepare_nyuv2.write_frame(base, split, number, img, np.asarray(mm) / 1000.0, ids, 3, estimate)
            stem = f"{number:05d}.png"
            mm = np.asarray(mm).astype(np.uint16)
            f = Frame(split, f"nyuv2/{split}/{number:05d}", arrays={"image": img, "depth": mm, "label40": ids})
            f.paths = {k: os.path.join(base, split, sub, stem)
                       for k, sub in (("image", "image"), ("depth", "depth"), ("semantic", "label40"))}
            if not isinstance(normals, bool):
                f.arrays["normals"] = _pick(normals, i).astype(np.uint8)
                save(os.path.join(base, split, "normals", stem), f.arrays["normals"])
            if not isinstance(normals, bool) or normals:
                f.paths["normals"] = os.path.join(base, split, "normals", stem)
            tree.frames.append(f)
            n = max(n, int(number))
    return tree


# ----------------------------------------------------------------------------- KITTI depth
KITTI_DRIVES = {"train": "2011_09_26_drive_0001_sync", "val": "2011_09_26_drive_0002_sync"}
KITTI_FX = 721.5377    # P_rect_02[0] of the 2011_09_26 recordings, at 1242 px


# KITTI raw calibration (2011_09_26's calib_cam_to_cam.txt R_rect_00, calib_velo_to_cam.txt R and
# T); P_rect_0X is built per frame size in kitti_projection().
KITTI_R_RECT = np.array([[9.999239e-01, 9.837760e-03, -7.445048e-03],
                         [-9.869795e-03, 9.999421e-01, -4.278459e-03],
                         [7.402527e-03, 4.351614e-03, 9.999631e-01]])
KITTI_VELO_R = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04],
                         [1.480249e-02, 7.280733e-04, -9.998902e-01],
                         [9.998621e-01, 7.523790e-03, 1.480755e-02]])
KITTI_VELO_T = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])
_P_LAST = {"image_02": (4.485728e+01, 2.163791e-01, 2.745884e-03),     # P_rect_0X[:, 3] at 1242 px
           "image_03": (-3.395242e+02, 2.199936e+00, 2.729905e-03)}


def kitti_projection(size, camera="image_02"):
    """(P_rect 3x4, R_rect_00 3x3, [R | T] 3x4) of the tree's calibration at frame size (H, W):
    KITTI_FX and the principal point scaled to the width, the real rectification and LiDAR pose."""
    h, w = size
    fx, (tx, ty, tz) = KITTI_FX * w / 1242, _P_LAST[camera]
    p = np.array([[fx, 0, w / 2, tx * w / 1242], [0, fx, h / 2, ty], [0, 0, 1, tz]])
    return p, KITTI_R_RECT, np.hstack([KITTI_VELO_R, KITTI_VELO_T[:, None]])


def kitti_calib(root, date="2011_09_26", size=(375, 1242), velodyne=True):
    """raw/{date}/calib_cam_to_cam.txt (S_rect, R_rect_00, P_rect_02/03: kitti_projection) and,
    with velodyne, raw/{date}/calib_velo_to_cam.txt (R, T), in the raw download's format."""
    base = os.path.join(str(root), "kitti_depth", "raw", date)
    num = lambda a: " ".join(f"{v:.9e}" for v in np.ravel(a))   # noqa: E731
    p2, r_rect, rt = kitti_projection(size, "image_02")
    p3 = kitti_projection(size, "image_03")[0]
    with open(_dirs(os.path.join(base, "calib_cam_to_cam.txt")), "w") as fh:
        fh.write(f"calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
                 f"R_rect_00: {num(r_rect)}\nS_rect_02: {size[1]:.6e} {size[0]:.6e}\n"
                 f"P_rect_02: {num(p2)}\nP_rect_03: {num(p3)}\n")
    if velodyne:
        with open(os.path.join(base, "calib_velo_to_cam.txt"), "w") as fh:
            fh.write(f"calib_time: 15-Mar-2012 11:37:16\nR: {num(rt[:, :3])}\nT: {num(rt[:, 3])}\n"
                     "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n")


def kitti_scan(rng, size, camera="image_02"):
    """(points (N, 4) float32 as a velodyne .bin stores them, the HxW float32 depth map they
    project to). Scan lines every 6th row below the top third, every 16th column, at depths from
    3 m (bottom) to 130 m (top; beyond the 80 m cap); each point is back-projected from pixel
    (v, u) and depth z through kitti_projection, to (u + 1, v + 1) before the devkit's one-pixel
    shift (lib.data.kitti.project_velodyne). Plus points the projection drops: behind the scanner,
    outside the image, and a farther one on an already hit pixel (the nearest point wins)."""
    h, w = size
    v, u = (a.ravel() for a in np.meshgrid(np.arange(h // 3, h, 6), np.arange(0, w, 16), indexing="ij"))
    z = _street_depth(rng, size, far=130.0)[v, u]
    p, r_rect, rt = kitti_projection(size, camera)
    m = np.eye(4)
    m[:3] = p @ np.vstack([np.hstack([r_rect, np.zeros((3, 1))]), [0, 0, 0, 1]]) @ np.vstack([rt, [0, 0, 0, 1]])

    def back(u, v, z):
        return np.linalg.solve(m, np.stack([z * (u + 1), z * (v + 1), z, np.ones_like(z)]))[:3].T
    pts = back(u, v, z)
    far = back(u[:5], v[:5], z[:5] * 2)                              # same pixels, twice as far
    outside = back(np.full(5, w + 40.0), v[:5], z[:5])               # right of the image
    behind = pts[:5] * [-1, 1, 1]                                    # x < 0: behind the scanner
    xyz = np.vstack([pts, far, outside, behind])
    points = np.hstack([xyz, rng.uniform(0, 1, (len(xyz), 1))]).astype(np.float32)
    depth = np.zeros(size, np.float32)
    depth[v, u] = z
    return points, depth


def kitti_frame(root, split, drive, frame, size=(375, 1242), camera="image_02", gt=True, image=None,
                depth=None, seed=0, velodyne=False):
    """One KITTI frame: raw/{date}/{drive}/{camera}/data/{frame}.png and, with gt, the annotated
    map {split}/{drive}/proj_depth/groundtruth/{camera}/{frame}.png (uint16, m = v / 256, 0 = no
    LiDAR return: every 4th row, none in the top third). depth: HxW uint16 as stored. velodyne:
    True writes raw/{date}/{drive}/velodyne_points/data/{frame}.bin from kitti_scan (its depth map
    in arrays["lidar"]; the date's calibration comes from kitti_calib), or an (N, 4) array to store."""
    base = os.path.join(str(root), "kitti_depth")
    rng = _rng(seed, "kitti", split, drive, frame)
    h, _ = size
    img = _photo(rng, _blocks(rng, size, range(12)), noise=0) if image is None else np.asarray(image)
    f = Frame(split, f"kitti_depth/{split}/{drive}/{camera}/{frame}", arrays={"image": img})
    f.paths["image"] = save(os.path.join(base, "raw", drive[:10], drive, camera, "data", f"{frame}.png"), img)
    if gt:
        v = depth
        if v is None:
            v = np.round(_street_depth(rng, size) * 256)
            v[: h // 3] = 0
            v[np.arange(h) % 4 != 0] = 0
        f.arrays["depth"] = np.asarray(v, np.uint16)
        f.paths["depth"] = save(os.path.join(base, split, drive, "proj_depth", "groundtruth", camera,
                                             f"{frame}.png"), f.arrays["depth"])
    if velodyne is not False:
        if velodyne is True:
            points, f.arrays["lidar"] = kitti_scan(_rng(seed, "kitti-velodyne", split, drive, frame), size, camera)
        else:
            points = np.asarray(velodyne, np.float32)
        f.paths["velodyne"] = _dirs(os.path.join(base, "raw", drive[:10], drive, "velodyne_points", "data",
                                                 f"{frame}.bin"))
        points.astype("<f4").tofile(f.paths["velodyne"])
    return f


def kitti(root, frames=2, size=(375, 1242), splits=("train", "val"), seed=0, eigen=True, calib=True,
          velodyne=True):
    """KITTI depth: annotated maps of train/ and val/ with their raw frames (one drive per split,
    KITTI_DRIVES), raw/2011_09_26/calib_cam_to_cam.txt (calib; kitti_calib, P_rect scaled to the
    width), with velodyne each frame's velodyne scan (kitti_scan) and calib_velo_to_cam.txt, and
    with eigen the lists eigen_train_files.txt (the train frames) and eigen_test_files.txt (the
    val frames: Eigen's test frames lie in the annotated sets), monodepth-style lines.
    Full size: the loader's 352x1216 crop is fixed (module docstring)."""
    base = os.path.join(str(root), "kitti_depth")
    tree = Tree(base)
    lists = {"train": [], "val": []}
    for split in splits:
        drive = KITTI_DRIVES[split]
        for i, frame in enumerate(_frames(frames, split, lambda i: f"{5 * i + 5:010d}")):
            tree.frames.append(kitti_frame(root, split, drive, frame, size, seed=seed, velodyne=velodyne))
            lists[split].append(" ".join(f"{drive[:10]}/{drive}/{cam}/data/{frame}.png"
                                         for cam in ("image_02", "image_03")))
    if calib:
        kitti_calib(root, "2011_09_26", size, velodyne=velodyne)
    for name, split in (("eigen_train_files.txt", "train"), ("eigen_test_files.txt", "val")):
        if eigen and lists[split]:
            with open(os.path.join(base, name), "w") as fh:
                fh.write("\n".join(lists[split]) + "\n")
    return tree


# ----------------------------------------------------------------------------- folder
def _face_normals(rng, size):
    """Unit normals of a sphere-like face, 0 outside an elliptic mask (HxWx3 float)."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w]
    x, y = (u - (w - 1) / 2) / (0.45 * w), (v - (h - 1) / 2) / (0.45 * h)
    inside = x ** 2 + y ** 2 < 1
    n = np.stack([x, y, -np.sqrt(np.clip(1 - x ** 2 - y ** 2, 0, 1)) - 0.3], -1)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(inside[..., None], n, 0.0)


def _heatmaps(rng, size, k):
    """K Gaussian heatmaps (sigma 1.5 px) at points inside the central part of the frame."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w]
    ys, xs = rng.uniform(0.25 * h, 0.75 * h, k), rng.uniform(0.25 * w, 0.75 * w, k)
    return np.exp(-((v[None] - ys[:, None, None]) ** 2 + (u[None] - xs[:, None, None]) ** 2) / 4.5)


def folder(root, name="folder", frames=2, size=(32, 64), splits=("train", "val"), seed=0,
           labels=("semantic", "depth", "normals"), classes=("road", "building", "car"), ignore_index=255,
           depth_scale=256.0, focal=None, normals_format="png", mask=False, keypoints=0,
           keypoint_depth=False, semantic=None, depth=None, normals=None, edges=None):
    """The generic `folder` layout (lib/data/folder.py) under ROOT/name: {split}/images/*.png and
    per label semantic/ (8-bit ids 0..K-1, some ignore_index), depth/ (16-bit, m = v /
    depth_scale), normals/ (8-bit RGB n = v / 127.5 - 1, or float .npy with normals_format="npy";
    0 = invalid, everywhere outside the face with mask=True), edges/ (8-bit external maps), and
    the keypoint extension: keypoints=K writes keypoints/*.npy (KxHxW Gaussian heatmaps), and
    keypoint_depth=True keypoint_depth/*.npy ((K,) floats). dataset.json holds what applies:
    classes and ignore_index (semantic), depth_scale (depth), focal. Overrides as stored:
    semantic HxW uint8, depth HxW uint16, normals HxWx3 (uint8 png / float npy), edges HxW
    uint8; keypoints may be a KxHxW array (or list) and keypoint_depth a (K,) array (or list)."""
    base = os.path.join(str(root), name)
    tree = Tree(base)
    heat_given, k = not isinstance(keypoints, int), keypoints if isinstance(keypoints, int) else 0
    depth_given = not isinstance(keypoint_depth, bool)
    cfg = {}
    if "semantic" in labels:
        cfg.update(classes=list(classes), ignore_index=ignore_index)
    if "depth" in labels:
        cfg["depth_scale"] = depth_scale
    if focal is not None:
        cfg["focal"] = focal
    if cfg:
        write_json(os.path.join(base, "dataset.json"), cfg)
    for split in splits:
        for i, stem in enumerate(_frames(frames, split, lambda i: f"{i:04d}")):
            rng = _rng(seed, name, split, i)
            d = os.path.join(base, split)
            ids = _pick(semantic, i)
            if ids is None:
                ids = _blocks(rng, size, [*range(len(classes)), ignore_index]).astype(np.uint8)
            f = Frame(split, f"folder/{split}/{stem}")
            f.arrays["image"] = _photo(rng, ids)
            f.paths["image"] = save(os.path.join(d, "images", stem + ".png"), f.arrays["image"])
            if "semantic" in labels:
                f.arrays["semantic"] = ids
                f.paths["semantic"] = save(os.path.join(d, "semantic", stem + ".png"), ids)
            if "depth" in labels:
                v = _pick(depth, i)
                if v is None:   # the top rows without depth (0): sky outdoors, a hole indoors
                    v = np.round(_street_depth(rng, size, 1.0, 60.0) * depth_scale)
                    v[: size[0] // 8] = 0
                f.arrays["depth"] = np.asarray(v, np.uint16)
                f.paths["depth"] = save(os.path.join(d, "depth", stem + ".png"), f.arrays["depth"])
            if "normals" in labels:
                n = _pick(normals, i)
                if n is None:
                    unit = _face_normals(rng, size) if mask else _room_normals(rng, size)
                    n = unit.astype(np.float32) if normals_format == "npy" else encode_normals(unit)
                f.arrays["normals"] = n
                path = os.path.join(d, "normals", stem + "." + normals_format)
                if normals_format == "npy":
                    np.save(_dirs(path), n)
                else:
                    save(path, n)
                f.paths["normals"] = path
            if "edges" in labels:
                e = _pick(edges, i)
                e = (255 * (np.abs(np.diff(ids.astype(int), axis=1, prepend=ids[:, :1])) > 0)).astype(
                    np.uint8) if e is None else e
                f.arrays["edges"] = e
                f.paths["edges"] = save(os.path.join(d, "edges", stem + ".png"), e)
            if heat_given or k:
                heat = _heatmaps(rng, size, k) if not heat_given else _pick(keypoints, i)
                f.arrays["keypoints"] = heat.astype(np.float32)
                f.paths["keypoints"] = _dirs(os.path.join(d, "keypoints", stem + ".npy"))
                np.save(f.paths["keypoints"], f.arrays["keypoints"])
            if depth_given or keypoint_depth is True:
                kd = _pick(keypoint_depth, i) if depth_given else None
                kd = rng.uniform(0.5, 1.5, len(f.arrays["keypoints"])) if kd is None else kd
                f.arrays["keypoint_depth"] = kd.astype(np.float32)
                f.paths["keypoint_depth"] = _dirs(os.path.join(d, "keypoint_depth", stem + ".npy"))
                np.save(f.paths["keypoint_depth"], f.arrays["keypoint_depth"])
            tree.frames.append(f)
    return tree


def _room_normals(rng, size):
    """Unit normals of a room: floor (facing up, -y) below the middle, walls facing the camera
    (-z) or sideways above it; one direction per block."""
    dirs = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [0.6, 0.0, -0.8], [-0.6, 0.0, -0.8]])
    which = _blocks(rng, size, (1, 2, 3))
    which[size[0] // 2:] = 0
    return dirs[which]


# ----------------------------------------------------------------------------- everything
def write_all(root, frames=2, keypoints=FACE_KEYPOINTS, seed=0):
    """Every registered real dataset under one data root (DATA/<registry folder>), plus the
    `folder` trees the experiments scripts pass as their own roots: pbrs (UM-Adapt's indoor
    source: 40 NYU classes, depth, normals), gta5d (UM-Adapt's outdoor source: GTA5 with depth,
    19 Cityscapes train ids), indoor_src (HeadFreeze's indoor source: normals + 13 NYU classes),
    sfsyn, sfsyn_front, facewh (faces: masked normals, `keypoints` heatmaps + keypoint_depth).
    Returns {name: path}: "data" (the data root), the registry names (cityscapes, ...,
    kitti_depth, folder) and the extra roots' names."""
    root = str(root)
    out = {"cityscapes": cityscapes(root, frames, splits=("train", "val", "test", "train_extra"), seed=seed),
           "synthia": synthia(root, frames, seed=seed),
           "gta5": gta5(root, frames, splits=("train", "val", "test"), seed=seed),
           "synscapes": synscapes(root, frames, splits=("train", "val", "test"), seed=seed),
           "mapillary": mapillary(root, frames, seed=seed),
           "isprs_potsdam": isprs(root, "isprs_potsdam", frames, seed=seed),
           "isprs_vaihingen": isprs(root, "isprs_vaihingen", frames, seed=seed),
           "nyuv2": nyuv2(root, frames, seed=seed),
           "kitti_depth": kitti(root, frames, seed=seed),
           "folder": folder(root, frames=frames, splits=("train", "val", "test"), seed=seed,
                            labels=("semantic", "depth", "normals", "edges"), focal=50.0,
                            keypoints=keypoints, keypoint_depth=True)}
    # CARLA in both layouts: folders for train / val, an AT/DT list file for test.
    out["carla"] = carla(root, frames, splits=("train", "val"), seed=seed)
    carla(root, frames, splits=("test",), seed=seed, layout="lists")
    indoor = dict(size=(30, 40), frames=frames, seed=seed, normals_format="png")
    out["pbrs"] = folder(root, "pbrs", labels=("semantic", "depth", "normals"), classes=CLASSES_40,
                         depth_scale=1000.0, **indoor)
    out["indoor_src"] = folder(root, "indoor_src", labels=("semantic", "normals"), classes=CLASSES_13, **indoor)
    out["gta5d"] = folder(root, "gta5d", size=(66, 120), frames=frames, seed=seed, labels=("semantic", "depth"),
                          classes=CLASS_NAMES[19], depth_scale=256.0)
    faces = dict(size=(32, 32), frames=frames, seed=seed, splits=("train", "val", "test"), labels=("normals",),
                 normals_format="npy", mask=True, keypoints=keypoints, keypoint_depth=True)
    for name in ("sfsyn", "sfsyn_front", "facewh"):
        out[name] = folder(root, name, **faces)
    return {"data": root, **{name: tree.root for name, tree in out.items()}}
