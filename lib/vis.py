"""Visualisation: class palettes, depth / normal / grey colouring, side-by-side panels.

Every colouring function takes a torch tensor or a numpy array and returns an HxWx3
uint8 numpy array, so the results go straight into make_panel() and save_png():

    tiles = [to_rgb_uint8(denormalize(image)), colorize_semantic(pred, 19),
             colorize_depth(depth), colorize_normals(normals)]
    save_png(make_panel([tiles], titles=[["image", "semantic", "depth", "normals"]]), path)

sample_panel() draws evaluate.py's --save-vis panels: per task image | ground truth |
prediction | error, titled, depth of a row on one scale, small samples enlarged.
"""

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lib.data.labels import CLASS_NAMES, NAME_TO_LABEL
from lib.engine import atomic_write

# Classes that are not a single Cityscapes label borrow the colour of a representative one.
_COLOUR_OF = {
    "flat": "road",
    "construction": "building",
    "object": "traffic light",
    "nature": "vegetation",
    "human": "person",
    "vehicle": "car",
}


def _palette(names):
    """Kx3 uint8 palette with the Cityscapes colour of each class name."""
    colours = [NAME_TO_LABEL[_COLOUR_OF.get(name, name)].color for name in names]
    return np.array(colours, dtype=np.uint8)


PALETTES = {k: _palette(names) for k, names in CLASS_NAMES.items()}

# Anchor points of matplotlib's 'magma' (perceptually uniform, dark to bright), sampled at
# 0, 1/8, ..., 1 (rounded); interpolating them comes close to the full 256-entry map.
_MAGMA_ANCHORS = np.array([
    (0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
    (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191),
], dtype=np.float64)


def _numpy(x):
    """A detached CPU numpy copy of a tensor, or the array itself."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _chw_to_hwc(x):
    """3xHxW -> HxWx3."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW array, got shape {tuple(x.shape)}")
    return np.moveaxis(x, 0, -1)


def apply_colormap(t, anchors=_MAGMA_ANCHORS):
    """Map values in [0, 1] (any shape) to uint8 RGB by interpolating colour anchors."""
    t = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float64)), 0.0, 1.0)
    positions = np.linspace(0.0, 1.0, len(anchors))
    channels = [np.interp(t, positions, anchors[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def generic_palette(num_classes):
    """Distinct colours for a class set without a named palette (ISPRS, NYUv2-40, folder)."""
    golden = 0.618033988749895
    hues = (np.arange(num_classes) * golden) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2))
           for i, h in enumerate(hues)]
    return (np.array(rgb) * 255).round().astype(np.uint8).reshape(-1, 3)


def colorize_semantic(labels, num_classes):
    """HxW class indices -> HxWx3 uint8 with the palette of that class set; others black."""
    labels = _numpy(labels).astype(np.int64)
    palette = PALETTES.get(num_classes)
    if palette is None:
        palette = generic_palette(num_classes)
    valid = (labels >= 0) & (labels < len(palette))
    rgb = palette[np.where(valid, labels, 0)]
    rgb[~valid] = 0
    return rgb


def colorize_depth(depth, max_depth=None, min_depth=None):
    """HxW depth (0 = invalid) -> HxWx3 uint8 magma of inverse depth: near bright, far dark.

    The colour scale spans [1 / max_depth, 1 / min_depth] in inverse depth; a bound left as
    None comes from the image's valid pixels (the far one from the farthest pixel, the near
    one from the 95th percentile, as monodepth2 does, so a few very close pixels do not
    darken the rest). Give both bounds to compare images on one scale.
    """
    depth = _numpy(depth).astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    rgb = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return rgb
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    auto_min, auto_max = depth_bounds(depth) if not (max_depth and min_depth) else (None, None)
    low = 1.0 / (max_depth or auto_max)
    high = 1.0 / (min_depth or auto_min)
    # A constant image would divide by zero; it gets the middle of the map instead.
    t = (inverse - low) / (high - low) if high > low else np.full_like(inverse, 0.5)
    rgb[valid] = apply_colormap(t[valid])
    return rgb


def depth_bounds(depth):
    """(near, far) metres of colorize_depth's automatic scale: the farthest valid pixel and the
    95th percentile of inverse depth; None, None when no pixel is valid."""
    depth = _numpy(depth).astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return None, None
    inverse = 1.0 / depth[valid]
    return 1.0 / np.percentile(inverse, 95), 1.0 / inverse.min()


def colorize_normals(normals):
    """3xHxW unit normals (camera coordinates, 0 = invalid) -> HxWx3 uint8 as (n + 1) / 2 * 255."""
    n = _chw_to_hwc(_numpy(normals).astype(np.float64))
    valid = np.isfinite(n).all(axis=-1) & (np.abs(np.nan_to_num(n)).sum(axis=-1) > 0)
    rgb = np.rint((np.clip(np.nan_to_num(n), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def colorize_gray(x):
    """HxW values in [0, 1] (edges, entropy) -> HxWx3 uint8 grey; clipped, NaN -> black."""
    x = np.clip(np.nan_to_num(_numpy(x).astype(np.float64)), 0.0, 1.0)
    grey = np.rint(x * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def to_rgb_uint8(image):
    """3xHxW RGB in [0, 1] -> HxWx3 uint8 (use denormalize() first for network inputs)."""
    rgb = _chw_to_hwc(_numpy(image).astype(np.float64))
    return np.rint(np.clip(np.nan_to_num(rgb), 0.0, 1.0) * 255.0).astype(np.uint8)


def _as_tile(tile, size):
    """An HxWx3 uint8 tile resized (nearest) to size = (H, W); grey HxW tiles become RGB."""
    tile = _numpy(tile)
    if tile.ndim == 2:
        tile = np.repeat(tile[..., None], 3, axis=-1)
    if tile.dtype != np.uint8:
        raise TypeError(f"panel tiles must be uint8 images, got {tile.dtype}; colorize first")
    if tile.shape[:2] != size:
        # Nearest keeps label and colour-map tiles free of invented in-between colours.
        tile = np.asarray(Image.fromarray(tile).resize((size[1], size[0]), Image.NEAREST))
    return tile


def _draw_titles(panel, placed):
    """Write each (text, x, y) in white on a black box, so it reads on any tile."""
    image = Image.fromarray(panel)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for text, x, y in placed:
        _, _, right, bottom = draw.textbbox((x + 2, y + 1), text, font=font)
        draw.rectangle((x, y, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x + 2, y + 1), text, fill=(255, 255, 255), font=font)
    return np.array(image)


def _title(titles, r, c):
    """titles[r][c] when it exists, else None."""
    if titles and r < len(titles) and titles[r] and c < len(titles[r]):
        return titles[r][c]
    return None


def make_panel(rows, pad=2, titles=None, pad_value=255):
    """Tile rows of HxWx3 uint8 images into one image, every tile at the first tile's size.

    rows: list of lists of tiles (rows may be shorter than the longest; the gap stays blank).
    titles: optional list of lists of strings (or None entries) drawn on the tiles' corners.
    The panel is (R * H + (R + 1) * pad) x (C * W + (C + 1) * pad) for R rows, C columns.
    """
    if not rows or not rows[0]:
        raise ValueError("make_panel needs at least one tile")
    size = tuple(_numpy(rows[0][0]).shape[:2])
    h, w = size
    ncols = max(len(row) for row in rows)
    panel = np.full(
        (len(rows) * h + (len(rows) + 1) * pad, ncols * w + (ncols + 1) * pad, 3),
        pad_value, dtype=np.uint8,
    )
    placed = []
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            panel[y:y + h, x:x + w] = _as_tile(tile, size)
            if _title(titles, r, c):
                placed.append((str(_title(titles, r, c)), x, y))
    return _draw_titles(panel, placed) if placed else panel


def save_png(array, path):
    """Write an HxWx3 (or HxW) uint8 array as PNG atomically, creating parent folders."""
    with atomic_write(path) as tmp:
        Image.fromarray(np.ascontiguousarray(_numpy(array))).save(tmp, format="PNG")


# ----------------------------------------------------------------------------- evaluation panels
def upscale(tile, factor, smooth=False):
    """An HxWx3 uint8 tile enlarged `factor` times: nearest for labels, bilinear for photos."""
    if factor <= 1:
        return tile
    h, w = tile.shape[:2]
    method = Image.BILINEAR if smooth else Image.NEAREST
    return np.asarray(Image.fromarray(tile).resize((w * factor, h * factor), method))


def semantic_error(pred, gt):
    """Wrong-pixel mask: wrong white, right black, unlabelled (255) dark grey."""
    pred, gt = _numpy(pred).astype(np.int64), _numpy(gt).astype(np.int64)
    rgb = np.zeros(gt.shape + (3,), dtype=np.uint8)
    rgb[pred != gt] = 255
    rgb[gt == 255] = 64
    return rgb


def depth_error(pred, gt, worst=0.5):
    """Absolute relative error |pred - gt| / gt in magma, 0 (black) to `worst` (bright);
    pixels without ground truth black."""
    pred, gt = _numpy(pred).astype(np.float64), _numpy(gt).astype(np.float64)
    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(pred)
    rgb = np.zeros(gt.shape + (3,), dtype=np.uint8)
    rel = np.abs(pred[valid] - gt[valid]) / gt[valid]
    rgb[valid] = apply_colormap(rel / worst)
    return rgb


def normal_error(pred, gt, worst=45.0):
    """Angle between predicted and true normals in magma, 0 (black) to `worst` degrees
    (bright); pixels without ground truth black."""
    p = _chw_to_hwc(_numpy(pred).astype(np.float64))
    g = _chw_to_hwc(_numpy(gt).astype(np.float64))
    valid = np.isfinite(g).all(-1) & (np.abs(np.nan_to_num(g)).sum(-1) > 0)
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    cos = np.clip((unit(np.nan_to_num(p)) * unit(np.nan_to_num(g))).sum(-1), -1.0, 1.0)
    rgb = np.zeros(g.shape[:2] + (3,), dtype=np.uint8)
    rgb[valid] = apply_colormap(np.degrees(np.arccos(cos[valid])) / worst)
    return rgb


def _task_tiles(task, pred, gt, num_classes):
    """(ground truth tile or None, prediction tile, error tile or None, error title) of one task.
    Depth ground truth and prediction share one scale, taken from the ground truth."""
    if task == "semantic":
        tiles = [colorize_semantic(x, num_classes) if x is not None else None for x in (gt, pred)]
        err = semantic_error(pred, gt) if gt is not None else None
        return (*tiles, err, "wrong pixels (white)")
    if task == "depth":
        near, far = depth_bounds(gt if gt is not None else pred)
        if near is None:
            near, far = depth_bounds(pred)
        tiles = [colorize_depth(x, max_depth=far, min_depth=near) if x is not None else None
                 for x in (gt, pred)]
        err = depth_error(pred, gt) if gt is not None else None
        return (*tiles, err, "abs rel 0-0.5")
    tiles = [colorize_normals(x) if x is not None else None for x in (gt, pred)]
    err = normal_error(pred, gt) if gt is not None else None
    return (*tiles, err, "angle 0-45 deg")


def sample_panel(image, preds, gts=None, num_classes=None, min_width=256):
    """One titled row per task: image | ground truth | prediction | error (labels optional).

    image: HxWx3 uint8; preds / gts: {task: class map HxW, depth HxW (metres) or normals 3xHxW}.
    Tiles narrower than `min_width` are enlarged by a whole factor (nearest except the photo),
    so small samples stay readable and every label pixel stays a clean square.
    """
    gts = gts or {}
    factor = max(1, -(-min_width // image.shape[1]))
    rows, titles = [], []
    for task in ("semantic", "depth", "normals"):
        if task not in preds:
            continue
        gt_tile, pred_tile, err_tile, err_title = _task_tiles(task, preds[task], gts.get(task), num_classes)
        row = [upscale(image, factor, smooth=True)]
        names = ["image"]
        if gt_tile is not None:
            row.append(upscale(gt_tile, factor))
            names.append(f"{task}: ground truth")
        row.append(upscale(pred_tile, factor))
        names.append(f"{task}: prediction")
        if err_tile is not None:
            row.append(upscale(err_tile, factor))
            names.append(f"error: {err_title}")
        rows.append(row)
        titles.append(names)
    if not rows:
        raise ValueError("sample_panel needs at least one prediction")
    return make_panel(rows, titles=titles)
