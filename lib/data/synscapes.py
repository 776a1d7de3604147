"""Synscapes (Wrenninge and Unger 2018): SemiMTL's synthetic domain (Table 3).

Official layout (synscapes.on.liu.se, "Features"): img/rgb/[1-25000].png (1440x720),
img/class/[1-25000].png (single-channel Cityscapes labelIds), img/depth/[1-25000].exr
(planar depth in metres, OpenEXR channel "Z"), img/instance, img/rgb-2k, meta/[1-25000].json.
Only img/rgb, img/class and img/depth are read.

Depth: the OpenEXR maps are decoded here (no OpenEXR dependency) for the scan-line
compressions NONE, ZIPS and ZIP, with 16/32-bit float or 32-bit uint channels; other
compressions fail with a message. A converted copy img/depth/N.npy (float32 metres, HxW) is
used instead of N.exr when present. Non-finite, non-positive and > MAX_DEPTH (1000 m: the sky)
values are invalid (0).

Splits (SemiMTL: 20k / 1k / 4k "in order"): by the numeric file id, train = 1..20000,
val = 20001..21000, test = 21001..25000, i.e. consecutive runs of SPLIT_SIZES starting at id 1.
File names sort NUMERICALLY (2.png before 10.png). A missing file leaves the other ids in their
split, so a partial download never moves images between splits.

Focal length: the camera is the same for every image, fx = 1590.83437 px at 1440x720 (the
"camera" block of meta/*.json shown on the official Features page); used by --focal-ref.
"""
import os
import struct
import zlib

import numpy as np

from lib.data import register
from lib.data.base import DataError, FileDataset, list_files, read_npy
from lib.data.labels import CITYSCAPES_TO

LAYOUT = """\
synscapes/
  img/rgb/1.png ... 25000.png       RGB images (1440x720)
  img/class/1.png ...               Cityscapes labelIds
  img/depth/1.exr ...               planar depth in metres (OpenEXR, channel Z), or 1.npy (float32 metres)
splits by numeric id: train 1-20000, val 20001-21000, test 21001-25000"""

# ----------------------------------------------------------------------------- OpenEXR depth
_EXR_MAGIC = 20000630
_EXR_DTYPES = {0: "<u4", 1: "<f2", 2: "<f4"}      # UINT, HALF, FLOAT
_EXR_COMPRESSIONS = ("NONE", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44", "B44A", "DWAA", "DWAB")
_EXR_LINES = {0: 1, 2: 1, 3: 16}                   # scan lines per chunk of the compressions read here


def _cstring(buf, pos):
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("latin-1"), end + 1


def _exr_header(buf):
    """Attributes {name: raw bytes} and the position of the chunk offset table."""
    magic, version = struct.unpack_from("<ii", buf, 0)
    if magic != _EXR_MAGIC:
        raise ValueError("not an OpenEXR file")
    if version & 0x1A00:    # tiled (0x200), deep (0x800) or multi-part (0x1000)
        raise ValueError("tiled, deep or multi-part OpenEXR files are not supported")
    attrs, pos = {}, 8
    while buf[pos] != 0:
        name, pos = _cstring(buf, pos)
        _, pos = _cstring(buf, pos)                 # attribute type name
        (size,) = struct.unpack_from("<i", buf, pos)
        attrs[name] = buf[pos + 4:pos + 4 + size]
        pos += 4 + size
    return attrs, pos + 1


def _exr_channels(raw):
    """[(name, dtype)] in stored order: each scan line holds the channels in this order."""
    out, pos = [], 0
    while raw[pos] != 0:
        name, pos = _cstring(raw, pos)
        ptype, xs, ys = struct.unpack_from("<i4xii", raw, pos)   # type, pLinear + 3 reserved, sampling
        pos += 16
        if (xs, ys) != (1, 1):
            raise ValueError(f"channel {name} is subsampled")
        out.append((name, np.dtype(_EXR_DTYPES[ptype])))
    return out


def _unzip(data, size):
    """A ZIP(S) chunk: zlib, then undo OpenEXR's byte predictor and its two-half interleaving."""
    t = np.frombuffer(zlib.decompress(data), np.uint8).astype(np.int64)
    if t.size != size:
        raise ValueError(f"a chunk holds {t.size} bytes, expected {size}")
    t[1:] -= 128
    t = (np.cumsum(t) & 255).astype(np.uint8)      # predictor: b[i] = b[i-1] + t[i] - 128
    out = np.empty(size, np.uint8)
    out[0::2], out[1::2] = t[:(size + 1) // 2], t[(size + 1) // 2:]
    return out


def _decode_exr(buf, channel):
    attrs, pos = _exr_header(buf)
    channels = _exr_channels(attrs["channels"])
    names = [name for name, _ in channels]
    if channel not in names and len(names) != 1:
        raise ValueError(f"no channel {channel!r} (channels {', '.join(names)})")
    index = names.index(channel) if channel in names else 0
    compression = attrs["compression"][0]
    if compression not in _EXR_LINES:
        raise ValueError(f"{_EXR_COMPRESSIONS[compression]} compression is not read here (NONE, ZIPS "
                         "and ZIP are): convert img/depth/N.exr to N.npy (float32 metres)")
    x0, y0, x1, y1 = struct.unpack("<4i", attrs["dataWindow"])
    width, height, lines = x1 - x0 + 1, y1 - y0 + 1, _EXR_LINES[compression]
    widths = [width * dt.itemsize for _, dt in channels]
    start, dtype = sum(widths[:index]), channels[index][1]
    out = np.zeros((height, width), np.float32)
    for offset in struct.unpack_from(f"<{-(-height // lines)}Q", buf, pos):
        y, size = struct.unpack_from("<ii", buf, offset)
        n = min(lines, y1 - y + 1)
        data = buf[offset + 8:offset + 8 + size]
        # A chunk that would not shrink is stored uncompressed, whatever the compression.
        raw = np.frombuffer(data, np.uint8) if size == n * sum(widths) else _unzip(data, n * sum(widths))
        rows = raw.reshape(n, sum(widths))[:, start:start + widths[index]]
        out[y - y0:y - y0 + n] = np.ascontiguousarray(rows).view(dtype).reshape(n, width)
    return out


def read_exr_channel(path, channel="Z"):
    """One channel of a scan-line OpenEXR file as float32 HxW (the only one if it has one)."""
    if not os.path.isfile(path):
        raise DataError(f"missing file: {path}")
    with open(path, "rb") as f:
        buf = f.read()
    try:
        return _decode_exr(buf, channel)
    except (ValueError, KeyError, IndexError, struct.error, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None


# ----------------------------------------------------------------------------- dataset
class Synscapes(FileDataset):
    """Synscapes rgb + Cityscapes labelIds + metric depth, numeric-id splits (module docstring)."""

    key = folder = "synscapes"
    splits = ("train", "val", "test")
    labels = ("semantic", "depth", "edges")
    class_sets = (19, 16, 13, 7, 11)
    layout = LAYOUT
    known_ids = range(34)    # Cityscapes labelIds as stored (license plate, -1, never is)
    SPLIT_SIZES = (("train", 20000), ("val", 1000), ("test", 4000))   # consecutive ids from 1
    MAX_DEPTH = 1000.0
    FOCAL = 1590.83437

    @classmethod
    def id_range(cls, split):
        """First and last numeric id of `split` (SPLIT_SIZES)."""
        first = 1
        for name, size in cls.SPLIT_SIZES:
            if name == split:
                return first, first + size - 1
            first += size
        raise DataError(f"dataset {cls.key!r}: SPLIT_SIZES has no split {split!r}")

    def index(self, split):
        rgb = os.path.join(self.root, "img", "rgb")
        first, last = self.id_range(split)
        stems = [os.path.splitext(rel)[0] for rel in list_files(rgb, ".png", "images", LAYOUT)]
        ids = sorted(int(s) for s in stems if s.isdigit() and first <= int(s) <= last)
        for lab, sub in (("semantic", "class"), ("depth", "depth")):
            folder = os.path.join(self.root, "img", sub)
            if lab in self.want and not os.path.isdir(folder):
                raise DataError(f"missing folder {folder} ({lab} labels); expected layout:\n{LAYOUT}")
        return [self._record(split, n) for n in ids]

    def _record(self, split, n):
        img = os.path.join(self.root, "img")
        rec = {"name": f"{self.key}/{split}/{n}", "image": os.path.join(img, "rgb", f"{n}.png")}
        candidates = {"semantic": [os.path.join(img, "class", f"{n}.png")],
                      "depth": [os.path.join(img, "depth", f"{n}{ext}") for ext in (".npy", ".exr")]}
        for lab in ("semantic", "depth"):
            if lab not in self.want:
                continue
            found = [path for path in candidates[lab] if os.path.isfile(path)]
            if not found:
                raise DataError(f"{rec['image']}: its {lab} file {' or '.join(candidates[lab])} is missing; "
                                f"expected layout:\n{LAYOUT}")
            rec[lab] = found[0]
        return rec


    def label_lut(self):
        return CITYSCAPES_TO[self.classes]

    def load_depth(self, rec):
        path = rec["depth"]
        depth = read_npy(path) if path.endswith(".npy") else read_exr_channel(path, "Z")
        if depth.ndim != 2:
            raise DataError(f"{path}: expected an HxW depth map, got shape {depth.shape}")
        depth = depth.astype(np.float32)
        depth[~np.isfinite(depth) | (depth <= 0) | (depth > self.MAX_DEPTH)] = 0.0
        return depth

    def focal(self, rec):
        return self.FOCAL


register(Synscapes, "Synscapes: Cityscapes labelIds + metric depth, SemiMTL's 20k/1k/4k split")
