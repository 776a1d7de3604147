"""Paired image/label transforms shared by every dataset."""
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# torchvision's ImageNet statistics: the pretrained backbones expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(rgb):
    """Map an RGB tensor in [0, 1] (3xHxW or Bx3xHxW) to the network's input space."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb - mean) / std


def denormalize(image):
    """Inverse of normalize(): back to RGB in [0, 1] (clamped), for visualisation."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


# ----------------------------------------------------------------------------- paired transforms
# Every function takes and returns the sample dict before normalisation: image float 3xHxW in
# [0, 1]; semantic int64 HxW (255 ignore); depth float HxW (0 invalid); normals 3xHxW; edges HxW.
IGNORE = 255
_NEAREST = ("semantic", "depth", "normals", "valid")   # labels never interpolated across boundaries
# "valid": an optional 1-map a caller adds to learn which pixels padding or rotation made up (0)
_FILL = {"image": 0.0, "semantic": IGNORE, "depth": 0.0, "normals": 0.0, "edges": 0.0, "valid": 0}


def to_tensors(raw):
    """numpy arrays from a loader (image uint8 HxWx3, labels HxW / HxWx3) -> the tensors above."""
    out = {}
    for key, arr in raw.items():
        t = torch.from_numpy(np.array(arr, copy=True))   # decoded arrays may be read-only views
        if key == "image":
            t = t.permute(2, 0, 1).float() / 255.0
        elif key == "semantic":
            t = t.long()
        elif key == "normals":
            t = (t.permute(2, 0, 1) if t.shape[-1] == 3 else t).float()
        else:
            t = t.float()
        out[key] = t
    return out


IMAGE_RESAMPLE = ("bilinear", "bicubic")


def resize_sample(sample, size, image_resample="bilinear"):
    """Resize to (H, W): image and edges bilinear (antialiased), the other labels nearest
    ("nearest-exact": the pixel PIL's NEAREST picks). image_resample="bicubic" resizes the image
    as the official DADA / ADVENT loaders do (pil_bicubic); edges stay bilinear."""
    size = tuple(int(s) for s in size)
    out = dict(sample)
    for key, t in sample.items():
        if not torch.is_tensor(t) or tuple(t.shape[-2:]) == size:
            continue
        if key == "image" and image_resample == "bicubic":
            out[key] = pil_bicubic(t, size)
            continue
        x = t[None] if t.dim() == 3 else t[None, None]
        if key in _NEAREST:
            x = F.interpolate(x.float(), size=size, mode="nearest-exact")
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x[0] if t.dim() == 3 else x[0, 0]
        out[key] = x.to(t.dtype)
    return out


def pil_bicubic(image, size):
    """PIL's BICUBIC resize of a 3xHxW image in [0, 1] to (H, W), back in [0, 1]: the official
    DADA code's image resize (ADVENT advent/dataset/base_dataset.py, `get_image`: PIL
    `Image.BICUBIC`, as DADA's SYNTHIA loader inherits it; dada/dataset/mapillary.py,
    `resize_with_pad`: BICUBIC too). The loaders' images are 8-bit (k / 255) when they are
    resized, so the round trip through uint8 is exact and the result is PIL's own, 8-bit
    rounding included."""
    pixels = (image * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    resized = Image.fromarray(pixels).resize((int(size[1]), int(size[0])), Image.BICUBIC)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).to(image.dtype) / 255.0


def crop(sample, top, left, size):
    """Crop (H, W) at (top, left); regions outside the image are padded with 'invalid'."""
    h, w = size
    out = dict(sample)
    for key, t in sample.items():
        if not torch.is_tensor(t):
            continue
        H, W = t.shape[-2:]
        if top >= 0 and left >= 0 and top + h <= H and left + w <= W:
            out[key] = t[..., top:top + h, left:left + w].clone()
            continue
        canvas = torch.full((*t.shape[:-2], h, w), _FILL.get(key, 0), dtype=t.dtype)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + h, H), min(left + w, W)
        canvas[..., y0 - top:y1 - top, x0 - left:x1 - left] = t[..., y0:y1, x0:x1]
        out[key] = canvas
    return out


def hflip(sample):
    """Mirror left-right; the x component of camera-frame normals changes sign."""
    out = {k: t.flip(-1) if torch.is_tensor(t) else t for k, t in sample.items()}
    if "normals" in out:
        out["normals"][0] = -out["normals"][0]
    return out


def photometric_jitter(image, p=0.5, gamma=(0.8, 1.2), brightness=(0.5, 2.0), colour=(0.8, 1.2)):
    """AT/DT's augmentation (official ICCV code, core/input.py): with probability p, a random gamma,
    brightness and per-channel colour gain together, then clip to [0, 1]."""
    if random.random() >= p:
        return image
    image = image ** random.uniform(*gamma)
    image = image * random.uniform(*brightness)
    gains = torch.tensor([random.uniform(*colour) for _ in range(3)], dtype=image.dtype)
    return (image * gains.view(3, 1, 1)).clamp(0, 1)


def paired_transform(sample, size, resize=None, train=False, flip=False, photometric=False):
    """The papers' pipeline: optional resize to a fixed size (DADA, SemiMTL), then at training a
    random crop of `size` (AT/DT, SemiMTL; a no-op when the image already has that size), a
    random horizontal flip and AT/DT's photometric augmentation.  Evaluation keeps the whole
    (resized) image, so scores are computed at full resolution."""
    if resize:
        sample = resize_sample(sample, resize)
    if not train:
        return sample
    H, W = sample["image"].shape[-2:]
    h, w = size
    if (H, W) != (h, w):
        top = random.randint(0, H - h) if H >= h else -((h - H) // 2)
        left = random.randint(0, W - w) if W >= w else -((w - W) // 2)
        sample = crop(sample, top, left, (h, w))
    if flip and random.random() < 0.5:
        sample = hflip(sample)
    if photometric:
        sample["image"] = photometric_jitter(sample["image"])
    return sample


def scale_sample(sample, factor, divide_depth=False):
    """Random-scaling step of EncNet's augmentation (SemiMTL Sec. 4.1 "following [65]"): every
    map resized by `factor` (image, edges bilinear; labels nearest, as resize_sample). With
    divide_depth the depth is divided by the factor: an image enlarged s times looks as if
    the scene were s times closer to the same camera (Eigen et al. 2014's scale augmentation)."""
    H, W = sample["image"].shape[-2:]
    out = resize_sample(sample, (max(1, round(H * factor)), max(1, round(W * factor))))
    if divide_depth and "depth" in out:
        out["depth"] = out["depth"] / factor
    return out


def rotate_sample(sample, degrees):
    """Rotation step of EncNet's augmentation (EncNet Sec. 4.1, as SemiMTL Sec. 4.1 follows it):
    `degrees` counter-clockwise about the image centre, on the pixel grid (not the normalised
    one, so non-square images are not sheared); image and edges bilinear, labels nearest, the
    uncovered corners 0 (image) or invalid. Camera-frame normals would also need their x, y
    components rotated: refused."""
    if "normals" in sample:
        raise ValueError("rotate_sample does not rotate normal vectors: leave rotation off with normals")
    H, W = sample["image"].shape[-2:]
    a = torch.deg2rad(torch.tensor(float(degrees), dtype=torch.float64))
    c, s = float(torch.cos(a)), float(torch.sin(a))
    # affine_grid maps each output pixel to the input in normalised [-1, 1] coordinates
    # (x_n = 2 X / W): the pixel rotation X_in = c X - s Y, Y_in = s X + c Y is
    # [[c, -s H / W], [s W / H, c]] there; with y pointing down it turns the content
    # counter-clockwise as displayed (the top moves to the left at 90 degrees).
    theta = torch.tensor([[c, -s * H / W, 0.0], [s * W / H, c, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, (1, 1, H, W), align_corners=False)
    inside = F.grid_sample(torch.ones(1, 1, H, W), grid, mode="nearest", align_corners=False)[0, 0] > 0
    out = dict(sample)
    for key, t in sample.items():
        if not torch.is_tensor(t) or t.dim() < 2 or tuple(t.shape[-2:]) != (H, W):
            continue
        x = (t[None] if t.dim() == 3 else t[None, None]).float()
        mode = "nearest" if key in _NEAREST else "bilinear"
        x = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
        x = x[0] if t.dim() == 3 else x[0, 0]
        if key in _NEAREST:
            x = torch.where(inside, x, torch.full_like(x, _FILL.get(key, 0.0)))
        out[key] = x.to(t.dtype)
    return out


def focal_scale(focal, focal_ref):
    """Depth factor that expresses a camera of focal `focal` (px) as one of `focal_ref` (AT/DT):
    an object of size S at depth Z spans f S / Z pixels, the same span at depth Z f_ref / f."""
    return float(focal_ref) / float(focal)
