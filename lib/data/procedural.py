"""Procedural two-domain urban street benchmark: the embedded default dataset of every script.

Scenes are generated on the fly from (seed, domain, split, index): no files, deterministic in
every process and DataLoader worker (one numpy Generator seeded with that tuple, never global
RNG state), and the same index gives the same scene at any resolution (intrinsics scale with
the width; every random draw happens before the image size is used).

Scene model.  A car-mounted pinhole camera looks down a straight street.  World frame:
X right, Y down, Z forward along the street, camera centre at the origin, ground plane at
Y = camera height.  The scene is a list of primitives, each with a class:
  road: the ground plane (lane markings are road texture); sidewalks: raised slabs (top face
  and curb) on both sides; buildings: boxes behind the sidewalks with varying set-back, length
  and height, a background row further out and sometimes a building closing the street;
  walls, see-through lattice fences, hedges and trees (trunk box + ellipsoid crown) in the
  gaps; poles and street lamps; traffic signs and lights (a plate on a pole, the pole labelled
  pole); vehicles (cars = body + cabin boxes, vans/buses = one box) in the lanes and parked
  at the curbs; persons (ellipsoid body + head) on the sidewalks; sky where no ray hits.
Every pixel's ray is intersected with the primitives (vectorised over the pixels of each
primitive's projected bounding box, with a z-buffer), so semantics, depth and normals come
from the same nearest surface and always agree.

Labels (docs/design.md, "The sample contract"):
  depth: z-distance along the optical axis in metres, clipped to MAX_DEPTH (far road near the
    horizon stays valid at MAX_DEPTH); 0 = sky (invalid, AT/DT's "infinite depth" sky).
  normals: unit vectors in CAMERA coordinates, x right, y down, z forward, pointing towards
    the camera (a level camera sees the road with normal (0, -1, 0)); 0 on sky.
  edges: lib.edges.detect_edges on the final RGB, the proxy-label path real datasets use.
  semantic: the 11 AT/DT classes of CLASSES (255 is never produced).

Domains share the layout prior (road low, sky high, buildings on the sides) and differ the
way synthetic and real data differ:
  "a" (synthetic, CARLA/SYNTHIA-like): one flat saturated colour per class, hard directional
    light with Lambertian shading, no texture beyond lane markings, no noise, no blur;
    level camera at 1.6 m, f = 160 px at width 256.
  "b" (real, Cityscapes-like): a different, greyer palette with per-instance colours
    (cars, buildings, clothes, signs), textures (facade windows, paving joints, asphalt
    grain and patches, leafy vegetation, clouds), random sun with building and vehicle cast
    shadows, distance haze, vignetting, white balance, slight blur and sensor noise; more
    vehicles and persons, fewer signs; camera at 1.3 m pitched 2.5 deg down, f = 208 px.
  The noise textures are fixed tables per image size, so only appearance noise (never
  geometry or labels) changes with the resolution.

The measured domain gap and the generator's speed are in the README ("The procedural
benchmark"), with the commands that produce them.
"""
import bisect
import functools
import math
from collections import namedtuple

import numpy as np
import torch

from lib.data.transforms import normalize
from lib.edges import detect_edges

DOMAINS = ("a", "b")
SPLITS = {"train": 2975, "val": 500, "test": 500}   # Cityscapes-sized virtual lengths
CLASSES = ("road", "sidewalk", "wall", "fence", "person", "pole", "vegetation", "vehicle",
           "traffic sign", "building", "sky")
LABELS = ("semantic", "depth", "normals", "edges")
# Focal length in pixels at width 256 (scales linearly with the width); AT/DT rescales
# predicted depth by f_target / f_source across datasets.
FOCAL_REF = {"a": 160.0, "b": 208.0}
MAX_DEPTH = 100.0

(ROAD, SIDEWALK, WALL, FENCE, PERSON, POLE, VEGETATION, VEHICLE, SIGN, BUILDING,
 SKY) = range(11)

Camera = namedtuple("Camera", "focal cx cy height pitch")
# Camera height (m) and downward pitch (deg) per domain: the "different sensor" part of the gap.
_MOUNT = {"a": (1.60, 0.0), "b": (1.30, 2.5)}

# Primitive kinds.
_BOX, _LATTICE, _ELLIPSOID = 0, 1, 2
# Axis codes of the hit surface: box faces by axis, curved surfaces, nothing.
_AX_X, _AX_Y, _AX_Z, _AX_CURVED, _AX_NONE = 0, 1, 2, 3, 4
_AX_BOX = 7   # rasteriser's placeholder: a box hit whose entry axis is found afterwards

# Object frequencies (Poisson means per scene) and street-side segment mix per domain.
_LAYOUT = {
    "a": dict(vehicles=2.5, parked=0.2, persons=1.5, poles=3.0, signs=3.0, trees=1.5,
              segments=(0.50, 0.15, 0.17, 0.18)),
    "b": dict(vehicles=4.5, parked=0.5, persons=4.5, poles=3.0, signs=1.5, trees=2.0,
              segments=(0.58, 0.12, 0.15, 0.15)),
}
_SEGMENT_KINDS = ("building", "wall", "fence", "park")

# Domain "a": one saturated colour per class (CARLA-like flat materials).
_PALETTE_A = np.array([
    [0.50, 0.25, 0.55], [0.95, 0.45, 0.80], [0.45, 0.45, 0.95], [0.95, 0.60, 0.15],
    [0.95, 0.10, 0.15], [0.95, 0.90, 0.10], [0.15, 0.80, 0.10], [0.10, 0.15, 0.90],
    [0.10, 0.95, 0.90], [0.75, 0.30, 0.15], [0.30, 0.60, 1.00]], dtype=np.float32)

_PALETTE_A_TUPLES = [tuple(c) for c in _PALETTE_A.tolist()]

# Domain "b": a few real-world material colours per class, one drawn per instance.
_PALETTE_B = {
    ROAD: [(0.33, 0.33, 0.35)],
    SIDEWALK: [(0.60, 0.57, 0.53), (0.52, 0.52, 0.52)],
    WALL: [(0.63, 0.61, 0.57), (0.55, 0.45, 0.38), (0.74, 0.73, 0.69)],
    FENCE: [(0.45, 0.42, 0.36), (0.33, 0.37, 0.35), (0.55, 0.55, 0.52)],
    PERSON: [(0.15, 0.15, 0.18), (0.36, 0.27, 0.21), (0.22, 0.27, 0.42), (0.52, 0.47, 0.42),
             (0.60, 0.17, 0.17), (0.75, 0.72, 0.66)],
    POLE: [(0.42, 0.43, 0.45), (0.30, 0.31, 0.30)],
    VEGETATION: [(0.27, 0.36, 0.15), (0.33, 0.40, 0.19), (0.20, 0.30, 0.14)],
    VEHICLE: [(0.85, 0.85, 0.85), (0.10, 0.10, 0.11), (0.55, 0.56, 0.58), (0.52, 0.11, 0.10),
              (0.15, 0.21, 0.40), (0.31, 0.33, 0.30)],
    SIGN: [(0.12, 0.27, 0.62), (0.78, 0.20, 0.18), (0.82, 0.72, 0.22), (0.12, 0.12, 0.12)],
    BUILDING: [(0.70, 0.64, 0.55), (0.56, 0.56, 0.56), (0.80, 0.78, 0.72), (0.52, 0.41, 0.34),
               (0.78, 0.72, 0.55)],
    SKY: [(0.80, 0.84, 0.90)],
}


# ----------------------------------------------------------------------------- arguments

def _check(domain, split, size, seed, labels):
    """Validate render arguments; returns (size, labels) normalised."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W) with positive integers, got {size!r}") from None
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be (H, W) with positive integers, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    labels = (labels,) if isinstance(labels, str) else tuple(labels)
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        raise ValueError(f"labels must be a subset of {LABELS}, got unknown {unknown}")
    return size, labels


def sample_name(domain, split, index, seed=0):
    """Stable sample id, e.g. 'proc-a/train/000042' (the seed is named when it is not 0)."""
    prefix = f"proc-{domain}" if seed == 0 else f"proc-{domain}-seed{seed}"
    return f"{prefix}/{split}/{index:06d}"


# ----------------------------------------------------------------------------- camera

def camera(domain, size=(128, 256)):
    """Pinhole camera of a domain at size (H, W): focal/principal point in pixels, metres, rad."""
    h, w = size
    height, pitch_deg = _MOUNT[domain]
    return Camera(FOCAL_REF[domain] * w / 256.0, w / 2.0, h / 2.0, height, math.radians(pitch_deg))


def ground_depth(cam, v):
    """Depth (m) of the ground plane seen at pixel-centre row coordinate v (= row + 0.5)."""
    # Ray (x, y, 1) in camera coordinates meets the plane 'world Y = height' at
    # z = f h / ((v - cy) cos(pitch) + f sin(pitch)); for a level camera z = f h / (v - cy).
    denom = (v - cam.cy) * math.cos(cam.pitch) + cam.focal * math.sin(cam.pitch)
    return cam.focal * cam.height / denom


@functools.lru_cache(maxsize=16)
def _rays(domain, h, w):
    """Per-pixel world-frame ray directions (camera z = 1, so the hit parameter is the depth)."""
    cam = camera(domain, (h, w))
    c, s = math.cos(cam.pitch), math.sin(cam.pitch)
    x = ((np.arange(w, dtype=np.float64) + 0.5 - cam.cx) / cam.focal)[None, :].repeat(h, 0)
    y = ((np.arange(h, dtype=np.float64) + 0.5 - cam.cy) / cam.focal)[:, None].repeat(w, 1)
    d = np.stack([x, y * c + s, -y * s + c]).astype(np.float32)
    # Exact zeros would make 0 * inf = nan in the slab tests; a tiny offset keeps them finite.
    safe = np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)
    inv = (1.0 / safe).astype(np.float32)
    t_ground = np.where(d[1] > 0, cam.height * inv[1], np.inf).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx + 0.5 - w / 2) ** 2 + (yy + 0.5 - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    # d[0] (and so inv[0]) varies along the columns only, d[1] and d[2] along the rows only:
    # the ray casters work on these 1-D tables and broadcast (the same float32 values).
    rays = dict(d=d, inv=inv, negsign=-np.sign(d).astype(np.float32),
                t_ground=t_ground, r2=r2.astype(np.float32),
                row=((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None],
                d_u=d[0, 0].copy(), d_v1=d[1, :, :1].copy(), d_v2=d[2, :, :1].copy(),
                inv_u=inv[0, 0].copy(), inv_v1=inv[1, :, :1].copy(), inv_v2=inv[2, :, :1].copy(),
                code0=np.where(np.isfinite(t_ground), _AX_Y, 8 + _AX_NONE).astype(np.int32))
    for a in rays.values():
        a.setflags(write=False)  # shared cache: callers must not modify it
    return rays


# ----------------------------------------------------------------------------- scene

class _Scene:
    """Primitives of one scene; index 0 is the ground (road), index 1 the sky."""

    def __init__(self, height, road_colour, sky_colour):
        self.height = height
        self.kind, self.geom, self.cls, self.colour, self.param = [], [], [], [], []
        # Shadow casters for domain b: vehicles as boxes (x0, x1, top, z0, z1); per street side
        # the facade line and (z0, z1, height) of its buildings and walls; the closing building.
        self.shadow_boxes = []
        self.facades, self.walls, self.cross = {}, {-1: [], 1: []}, None
        # Placeholders: the ground and the sky are handled analytically by the ray caster.
        self.add(_BOX, (0, 0, 0, 0, 0, 0), ROAD, road_colour)
        self.add(_BOX, (0, 0, 0, 0, 0, 0), SKY, sky_colour)

    def add(self, kind, geom, cls, colour, param=(0.0, 0.0, 0.0, 0.0)):
        self.kind.append(kind)
        self.geom.append(geom)
        self.cls.append(cls)
        self.colour.append(colour)
        self.param.append(param)

    def box(self, x0, x1, bottom, top, z0, z1, cls, colour, param=(0.0, 0.0, 0.0, 0.0), kind=_BOX):
        """Axis-aligned box from heights above the ground (metres) to world Y-down bounds."""
        x0, x1 = min(x0, x1), max(x0, x1)
        self.add(kind, (x0, x1, self.height - top, self.height - bottom, z0, z1), cls, colour, param)

    def ellipsoid(self, x, centre_height, z, rx, ry, rz, cls, colour):
        self.add(_ELLIPSOID, (x, self.height - centre_height, z, rx, ry, rz), cls, colour)

    def arrays(self):
        return (np.array(self.kind, np.int8), np.array(self.geom, np.float64),
                np.array(self.cls, np.int64), np.array(self.colour, np.float32),
                np.array(self.param, np.float32))


def _colour(rng, domain, cls):
    """Albedo of one instance: the class colour (a) or a jittered real-world material (b)."""
    if domain == "a":
        return _PALETTE_A_TUPLES[cls]
    choices = _PALETTE_B[cls]
    r = rng.random(5).tolist()          # one draw call: this runs ~35 times per scene
    base = choices[min(int(r[0] * len(choices)), len(choices) - 1)]
    gain = 0.85 + 0.3 * r[1]
    return (min(max(base[0] * gain * (0.94 + 0.12 * r[2]), 0.02), 0.98),
            min(max(base[1] * gain * (0.94 + 0.12 * r[3]), 0.02), 0.98),
            min(max(base[2] * gain * (0.94 + 0.12 * r[4]), 0.02), 0.98))


def _tree(scene, rng, domain, x, z, scale=1.0):
    """Street tree: trunk box and ellipsoid crown, both vegetation (as in Cityscapes)."""
    trunk = rng.uniform(1.8, 3.0) * scale
    col = _colour(rng, domain, VEGETATION)
    scene.box(x - 0.15, x + 0.15, 0.0, trunk + 0.3, z - 0.15, z + 0.15, VEGETATION, col)
    rx, ry = rng.uniform(1.2, 2.4, size=2) * scale
    scene.ellipsoid(x, trunk + 0.8 * ry, z, rx, ry, rx, VEGETATION, col)


@functools.lru_cache(maxsize=None)
def _cumulative(weights):
    """Cumulative segment-mix weights as Python floats (for bisect, = np.searchsorted)."""
    return tuple(np.cumsum(weights).tolist())


def _street_side(scene, rng, domain, side, curb_x, sidewalk, z_end, lay):
    """Buildings, walls, fences and parks along one side (side = -1 left, +1 right)."""
    facade = curb_x + side * sidewalk
    scene.facades[side] = facade
    cumulative = _cumulative(lay["segments"])
    z = rng.uniform(-4.0, 2.0)
    while z < z_end:
        kind = _SEGMENT_KINDS[min(bisect.bisect_left(cumulative, rng.random()), 3)]
        # Far segments cover few pixels: make them longer to keep the primitive count low.
        length = rng.uniform(8.0, 24.0) * (1.0 + max(z, 0.0) / 50.0)
        z0, z1 = max(z, 0.3), min(z + length, z_end)
        if kind == "building":
            setback = rng.uniform(0.0, 2.5) if rng.random() < 0.4 else 0.0
            height = rng.uniform(6.0, 28.0)
            # Window grid (domain b texture): column / floor spacing and glass darkness.
            param = (rng.uniform(1.6, 3.2), rng.uniform(2.8, 3.6), rng.uniform(0.3, 0.6),
                     rng.uniform(0.0, 1.0))
            x_in = facade + side * setback
            scene.box(x_in, x_in + side * 14.0, 0.0, height, z0, z1, BUILDING,
                      _colour(rng, domain, BUILDING), param)
            scene.walls[side].append((z0, z1, height))
            if rng.random() < 0.2:
                z1 += rng.uniform(1.0, 4.0)  # alley between buildings
        else:
            if kind == "wall":
                wall_h = rng.uniform(1.2, 3.2)
                scene.box(facade, facade + side * 0.35, 0.0, wall_h, z0, z1, WALL,
                          _colour(rng, domain, WALL))
                scene.walls[side].append((z0, z1, wall_h))
            elif kind == "fence":
                fence_h = rng.uniform(1.0, 2.0)
                # Lattice: bar spacing, bar width (m); rails are fixed at the top and bottom.
                param = (rng.uniform(0.12, 0.25), rng.uniform(0.05, 0.1), 0.0, 0.0)
                scene.box(facade, facade + side * 0.08, 0.0, fence_h, z0, z1, FENCE,
                          _colour(rng, domain, FENCE), param, kind=_LATTICE)
                if rng.random() < 0.6:
                    scene.box(facade + side * 0.8, facade + side * 2.5, 0.0, rng.uniform(0.8, 2.2),
                              z0, z1, VEGETATION, _colour(rng, domain, VEGETATION))
            else:  # park: hedge along the sidewalk
                scene.box(facade, facade + side * 1.8, 0.0, rng.uniform(0.8, 2.5), z0, z1,
                          VEGETATION, _colour(rng, domain, VEGETATION))
            for _ in range(rng.integers(0, 3) if z0 < 80.0 else 0):
                _tree(scene, rng, domain, facade + side * rng.uniform(2.5, 8.0),
                      rng.uniform(z0, z1), scale=rng.uniform(1.0, 1.6))
        z = z1


def _vehicles(scene, rng, domain, lanes, curbs, lay):
    """Cars, vans and buses in the lanes and parked along the curbs, without overlaps."""
    placed = []
    count = rng.poisson(lay["vehicles"])
    for _ in range(count):
        parked = rng.random() < lay["parked"]
        if parked:
            side = rng.integers(2)
            x = curbs[side] + (1.2 if side == 0 else -1.2)
        else:
            x = lanes[rng.integers(len(lanes))] + rng.uniform(-0.3, 0.3)
        van = rng.random() < 0.2
        width = rng.uniform(2.1, 2.5) if van else rng.uniform(1.7, 1.95)
        length = rng.uniform(5.0, 11.0) if van else rng.uniform(3.9, 4.8)
        # Own lane: keep a safe distance to the rear end; others may be beside the camera.
        z_min = 6.0 if abs(x) < width / 2 + 0.8 else 2.5
        z = rng.uniform(z_min, 60.0) + length / 2
        if any(abs(x - px) < (width + pw) / 2 + 0.3 and abs(z - pz) < (length + pl) / 2 + 1.0
               for px, pz, pw, pl in placed):
            continue
        placed.append((x, z, width, length))
        col = _colour(rng, domain, VEHICLE)
        x0, x1, z0, z1 = x - width / 2, x + width / 2, z - length / 2, z + length / 2
        if van:
            top = rng.uniform(2.2, 3.3)
            scene.box(x0, x1, 0.0, top, z0, z1, VEHICLE, col)
        else:
            body = rng.uniform(0.9, 1.1)
            top = body + rng.uniform(0.45, 0.6)
            scene.box(x0, x1, 0.0, body, z0, z1, VEHICLE, col)
            c0 = z0 + length * rng.uniform(0.2, 0.35)
            # Darker cabin: windows make the cabin read as glass in both domains.
            glass = tuple(np.array(col) * 0.45) if domain == "b" else col
            scene.box(x0 + 0.08, x1 - 0.08, body, top, c0, c0 + length * 0.5, VEHICLE, glass)
        scene.shadow_boxes.append((x0, x1, top, z0, z1))


def _sidewalk_objects(scene, rng, domain, curbs, sidewalks, lay):
    """Persons, poles, lamps, signs and street trees on the two sidewalks."""
    def place(margin_lo, margin_hi):
        side = rng.integers(2)
        sgn = -1.0 if side == 0 else 1.0
        return side, curbs[side] + sgn * rng.uniform(margin_lo, max(margin_lo, sidewalks[side] - margin_hi))

    for _ in range(rng.poisson(lay["persons"])):
        if rng.random() < 0.15:  # crossing the road
            x, z = rng.uniform(curbs[0], curbs[1]), rng.uniform(6.0, 30.0)
        else:
            _, x = place(0.4, 0.3)
            z = rng.uniform(3.0, 45.0)
        tall = rng.uniform(1.55, 1.9)
        body = (tall - 0.22) / 2
        col = _colour(rng, domain, PERSON)
        scene.ellipsoid(x, body, z, rng.uniform(0.22, 0.3), body, 0.17, PERSON, col)
        skin = tuple(rng.uniform(0.35, 0.8) * np.array((1.0, 0.8, 0.65))) if domain == "b" else col
        scene.ellipsoid(x, tall - 0.11, z, 0.11, 0.12, 0.11, PERSON, skin)
    for _ in range(rng.poisson(lay["poles"])):
        side, x = place(0.3, 0.3)
        z = rng.uniform(3.0, 80.0)
        top, half = rng.uniform(4.0, 9.0), rng.uniform(0.06, 0.12)
        col = _colour(rng, domain, POLE)
        scene.box(x - half, x + half, 0.0, top, z - half, z + half, POLE, col)
        if rng.random() < 0.5:  # street lamp arm over the road
            arm = -1.0 if x > 0 else 1.0
            scene.box(x, x + arm * rng.uniform(1.0, 2.5), top - 0.15, top, z - 0.06, z + 0.06, POLE, col)
    for _ in range(rng.poisson(lay["signs"])):
        side, x = place(0.3, 0.3)
        z = rng.uniform(4.0, 50.0)
        top = rng.uniform(2.3, 3.3)
        scene.box(x - 0.05, x + 0.05, 0.0, top, z - 0.05, z + 0.05, POLE, _colour(rng, domain, POLE))
        light = rng.random() < 0.3
        pw, ph = (0.35, 0.9) if light else rng.uniform(0.5, 0.9, size=2)
        scene.box(x - pw / 2, x + pw / 2, top - ph, top, z - 0.1, z - 0.05, SIGN, _colour(rng, domain, SIGN))
    for _ in range(rng.poisson(lay["trees"])):
        _, x = place(0.6, 0.5)
        _tree(scene, rng, domain, x, rng.uniform(4.0, 70.0))


def _generate(rng, domain, height):
    """Random street layout for one sample (size-independent draws only)."""
    lay = _LAYOUT[domain]
    scene = _Scene(height, _colour(rng, domain, ROAD), _colour(rng, domain, SKY))
    road_left, road_right = -rng.uniform(2.5, 8.5), rng.uniform(2.0, 5.0)
    lane_w = rng.uniform(2.8, 3.5)
    curb = rng.uniform(0.08, 0.18)
    sidewalks = rng.uniform(1.8, 5.0, size=2).tolist()
    closed = rng.random() < 0.5
    z_end = rng.uniform(45.0, 150.0) if closed else 220.0
    col_sw = _colour(rng, domain, SIDEWALK)
    # Sidewalk slabs extend far sideways: whatever ground shows through gaps is pavement.
    scene.box(road_left - 300.0, road_left, 0.0, curb, 0.1, 1e3, SIDEWALK, col_sw)
    scene.box(road_right, road_right + 300.0, 0.0, curb, 0.1, 1e3, SIDEWALK, col_sw)
    for side, curb_x, sw in ((-1, road_left, sidewalks[0]), (1, road_right, sidewalks[1])):
        _street_side(scene, rng, domain, side, curb_x, sw, z_end, lay)
        back = curb_x + side * (sw + rng.uniform(16.0, 35.0))
        scene.box(back, back + side * 30.0, 0.0, rng.uniform(10.0, 40.0), 0.3, z_end + 40.0,
                  BUILDING, _colour(rng, domain, BUILDING),
                  (rng.uniform(1.6, 3.2), rng.uniform(2.8, 3.6), rng.uniform(0.3, 0.6), 0.5))
    if closed:
        scene.cross = (z_end, rng.uniform(8.0, 30.0))
        scene.box(-300.0, 300.0, 0.0, scene.cross[1], z_end, z_end + 20.0, BUILDING,
                  _colour(rng, domain, BUILDING),
                  (rng.uniform(1.6, 3.2), rng.uniform(2.8, 3.6), rng.uniform(0.3, 0.6), 0.5))
    n_lanes = max(1, int(round((road_right - road_left) / lane_w)))
    lane_w = (road_right - road_left) / n_lanes
    lanes = [road_left + lane_w * (i + 0.5) for i in range(n_lanes)]
    _vehicles(scene, rng, domain, lanes, (road_left, road_right), lay)
    _sidewalk_objects(scene, rng, domain, (road_left, road_right), sidewalks, lay)
    scene.road = dict(left=road_left, right=road_right, lane_w=lane_w, n_lanes=n_lanes)
    return scene


def _appearance(rng, domain):
    """Lighting, texture offsets and sensor effects of one sample (drawn before rendering)."""
    if domain == "a":
        sun = np.array([-0.45, -1.0, -0.55])
        return dict(sun=sun / np.linalg.norm(sun), ambient=0.38, diffuse=0.62)
    azimuth, elevation = rng.uniform(0, 2 * math.pi), rng.uniform(0.4, 1.1)
    sun = np.array([math.cos(azimuth) * math.cos(elevation), -math.sin(elevation),
                    math.sin(azimuth) * math.cos(elevation)])
    # float32 arrays / Python floats only: numpy float64 scalars would promote the images.
    gains = (rng.uniform(0.92, 1.08, size=3) * rng.uniform(0.85, 1.15)).astype(np.float32)
    return dict(sun=sun, ambient=rng.uniform(0.5, 0.65), diffuse=rng.uniform(0.3, 0.45),
                shadow=rng.uniform(0.45, 0.65), haze=rng.uniform(120.0, 400.0),
                gains=gains[:, None, None], vignette=rng.uniform(0.15, 0.4),
                blur=rng.uniform(0.4, 1.0), noise=rng.uniform(0.01, 0.025),
                offsets=rng.random(8).tolist(), clouds=rng.uniform(0.0, 0.6))


# ----------------------------------------------------------------------------- ray casting

def _project(cam, x, y, z):
    """Pixel coordinates (u, v) of world points (arrays); points must lie in front of the camera."""
    c, s = math.cos(cam.pitch), math.sin(cam.pitch)
    zc = np.maximum(y * s + z * c, 1e-6)
    return cam.focal * x / zc + cam.cx, cam.focal * (y * c - z * s) / zc + cam.cy


# The 12 edges of a box as pairs of corner indices (corner i has bit a set: upper bound on axis a).
_EDGES = np.array([(i, i | 1 << a) for i in range(8) for a in range(3) if not i >> a & 1])
_NEAR = 0.05   # camera-plane clipping distance (m) for the projected bounding boxes
# Corner i takes the upper bound on axis a when bit a of i is set: (8 x 3) lo/hi selectors.
_CORNER_BITS = np.array([[(i >> a) & 1 for a in range(3)] for i in range(8)])
_CORNER_AXES = np.array([[0, 1, 2]] * 8)


def _bboxes(kind, geom, cam, h, w):
    """Conservative pixel boxes (v0, v1, u0, u1) of every primitive's projection, nearest depth."""
    lo = np.where(kind[:, None] == _ELLIPSOID, geom[:, :3] - geom[:, 3:], geom[:, 0::2])
    hi = np.where(kind[:, None] == _ELLIPSOID, geom[:, :3] + geom[:, 3:], geom[:, 1::2])
    corners = np.stack([lo, hi], 1)[:, _CORNER_BITS, _CORNER_AXES]  # N x 8 x 3
    zc = corners[..., 1] * math.sin(cam.pitch) + corners[..., 2] * math.cos(cam.pitch)
    # Clip against the plane camera-z = _NEAR: corners in front plus edge crossings, so that
    # boxes reaching behind the camera (long facades, sidewalks) keep a tight screen box.
    zi, zj = zc[:, _EDGES[:, 0]], zc[:, _EDGES[:, 1]]
    crosses = (zi - _NEAR) * (zj - _NEAR) < 0
    frac = np.where(crosses, (_NEAR - zi) / np.where(crosses, zj - zi, 1.0), np.nan)
    pi, pj = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]
    points = np.concatenate([np.where((zc >= _NEAR)[..., None], corners, np.nan),
                             pi + frac[..., None] * (pj - pi)], 1)
    u, v = _project(cam, points[..., 0], points[..., 1], points[..., 2])
    visible = ~np.isnan(u).all(1)
    u, v = np.where(visible[:, None], u, 0.0), np.where(visible[:, None], v, 0.0)
    # fmin / fmax skip the NaNs (every visible row has a finite point): nanmin without copies.
    boxes = np.stack([np.floor(np.fmin.reduce(v, 1)), np.ceil(np.fmax.reduce(v, 1)) + 1,
                      np.floor(np.fmin.reduce(u, 1)), np.ceil(np.fmax.reduce(u, 1)) + 1], 1)
    boxes = np.clip(boxes, 0, [h, h, w, w]).astype(np.int64)
    boxes[~visible] = 0             # entirely behind the camera
    return boxes, zc.min(1)         # the nearest corner bounds the depth of every point


def _cast_box(rays, sl, g, t_buf, base=None):
    """Slab test against one axis-aligned box over the pixels of `sl`: full-box arrays
    (t_near, code, hit) with code = base + the entry axis (valid where hit); code is None
    when base is None (the rasteriser then finds the entry axes of all boxes in one pass,
    see _box_axes)."""
    vs, us = sl
    iz = rays["inv_v2"][vs]              # rows only (nv x 1)
    t_near = iz * g[4]                   # every box lies in front: z0 > 0 is the near Z plane
    t_far = iz * g[5]
    # Y slab: rows only.
    lo, hi = g[2], g[3]
    iy = rays["inv_v1"][vs]
    near_y = None
    if lo > 0 or hi < 0:                 # camera outside this slab: one near, one far plane
        near_y, far = (iy * lo, iy * hi) if lo > 0 else (iy * hi, iy * lo)
        np.maximum(t_near, near_y, out=t_near)
        np.minimum(t_far, far, out=t_far)
    else:                                # camera inside the slab: only the exit plane counts
        np.minimum(t_far, np.maximum(iy * lo, iy * hi), out=t_far)
    # X slab: columns only; broadcasting makes the full-box arrays.
    lo, hi = g[0], g[1]
    ix = rays["inv_u"][us]
    near_x = None
    if lo > 0 or hi < 0:
        near_x, far = (ix * lo, ix * hi) if lo > 0 else (ix * hi, ix * lo)
        t_near = np.maximum(t_near, near_x)
        t_far = np.minimum(t_far, far)
    else:
        t_near = np.broadcast_to(t_near, t_buf.shape)
        t_far = np.minimum(t_far, np.maximum(ix * lo, ix * hi))
    np.minimum(t_far, t_buf, out=t_far)
    hit = t_near < t_far
    if not hit.any():
        return None
    # The entry plane is the one whose near distance won the max (exact float equality);
    # Y wins over X wins over Z.
    if base is None:
        code = None
    elif near_x is not None:
        code = np.where(near_x == t_near, np.int32(base + _AX_X), np.int32(base + _AX_Z))
        if near_y is not None:
            np.copyto(code, np.int32(base + _AX_Y), where=near_y == t_near)
    elif near_y is not None:
        code = np.where(near_y == t_near, np.int32(base + _AX_Y), np.int32(base + _AX_Z))
    else:
        code = np.int32(base + _AX_Z)
    return t_near, code, hit


def _cast_ellipsoid(rays, sl, g, t_buf):
    """Ray / axis-aligned ellipsoid intersection (nearest root) for the pixels of `sl`."""
    vs, us = sl
    r = g[3:]
    # dx varies along the columns only, dy and dz along the rows only (broadcast below).
    dx = rays["d_u"][us] * (1.0 / r[0])
    dy, dz = rays["d_v1"][vs] * (1.0 / r[1]), rays["d_v2"][vs] * (1.0 / r[2])
    cx, cy, cz = g[0] / r[0], g[1] / r[1], g[2] / r[2]
    a = dx * dx + dy * dy
    a += dz * dz
    b = dx * cx + dy * cy
    b += dz * cz
    disc = b * b - a * (cx * cx + cy * cy + cz * cz - 1.0)
    hit = disc > 0
    t = (b[hit] - np.sqrt(disc[hit])) / a[hit]
    keep = (t > 0) & (t < t_buf[hit])
    hit[hit] = keep
    if not hit.any():
        return None
    return t[keep], _AX_CURVED, hit


def _lattice(rays, sl, g, param, res):
    """Fence pattern on a box hit: vertical bars and two rails; see-through elsewhere."""
    t, axis, hit = res
    along = t * rays["d"][2][sl][hit] - g[4]
    up = g[3] - t * rays["d"][1][sl][hit]        # height above the fence's bottom
    keep = (np.mod(along, param[0]) < param[1]) | (up < 0.1) | (up > g[3] - g[2] - 0.1)
    hit[hit] = keep
    return (t[keep], axis[keep], hit) if keep.any() else None


def _entry_planes(lo, hi):
    """Per primitive, the slab's entry plane (the near one when the camera is outside the
    slab, as in _cast_box) as float32, NaN when the camera is inside the slab."""
    return np.where(lo > 0, lo, np.where(hi < 0, hi, np.nan)).astype(np.float32)


def _box_axes(rays, geom, t_buf, pid_p, axis):
    """Entry axis of the pixels whose nearest hit is a solid box (marked _AX_BOX), in place.

    The same test as _cast_box's, on the final z-buffer: the near distance of the Y plane
    (then X) equals the hit depth exactly where that plane won the slab max; else Z."""
    box = axis == _AX_BOX
    planes_y = _entry_planes(geom[:, 2], geom[:, 3])
    planes_x = _entry_planes(geom[:, 0], geom[:, 1])
    # inv[1] varies along the rows only, inv[0] along the columns only (broadcast).
    np.copyto(axis, _AX_Z, where=box)
    for planes, inv, code in ((planes_x, rays["inv_u"], _AX_X), (planes_y, rays["inv_v1"], _AX_Y)):
        near = np.take(planes, pid_p)
        near *= inv
        won = near == t_buf
        won &= box
        np.copyto(axis, code, where=won)


def _rasterise(scene, cam, size, domain):
    """Nearest hit per pixel: depth t, primitive id and hit axis (z-buffer over primitives)."""
    h, w = size
    rays = _rays(domain, h, w)
    kind, geom, cls, colour, param = scene.arrays()
    t_buf = rays["t_ground"].copy()
    # code = primitive id * 8 + axis: one masked write per primitive instead of two.
    code = rays["code0"].copy()
    boxes, z_min = _bboxes(kind, geom, cam, h, w)
    order = (2 + np.argsort(z_min[2:], kind="stable")).tolist()
    # Python lists and floats: cheaper per item, and numpy float64 scalars would promote the
    # float32 ray arrays to float64.
    box_list, z_list, kinds, geoms = boxes.tolist(), z_min.tolist(), kind.tolist(), geom.tolist()
    # Front to back, so that hidden primitives are culled by one max() over their box.
    for i in order:
        v0, v1, u0, u1 = box_list[i]
        if v1 <= v0 or u1 <= u0:
            continue
        sl = (slice(v0, v1), slice(u0, u1))
        tb = t_buf[sl]
        if tb.max() < z_list[i]:
            continue
        if kinds[i] == _ELLIPSOID:
            res = _cast_ellipsoid(rays, sl, geoms[i], tb)
        else:
            if kinds[i] != _LATTICE:
                res = _cast_box(rays, sl, geoms[i], tb)
                if res is not None:
                    t_near, _, hit = res
                    np.copyto(tb, t_near, where=hit)
                    np.copyto(code[sl], 8 * i + _AX_BOX, where=hit)   # axis found below
                continue
            res = _cast_box(rays, sl, geoms[i], tb, 8 * i)
            if res is None:
                continue
            t_near, box_code, hit = res
            axis = np.broadcast_to(box_code, hit.shape)[hit] - 8 * i
            res = _lattice(rays, sl, geoms[i], param[i].tolist(), (t_near[hit], axis, hit))
        if res is None:
            continue
        t, axis, hit = res
        tb[hit] = t
        code[sl][hit] = axis + 8 * i
    pid = code >> 3
    pid_p = pid.astype(np.intp)          # take() wants intp indices: convert once
    axis = code & 7
    _box_axes(rays, geom, t_buf, pid_p, axis)
    return dict(t=t_buf, pid=pid, pid_p=pid_p, axis=axis, geom=geom, cls=cls, colour=colour,
                param=param, rays=rays, height=cam.height, cls_map=np.take(cls, pid_p))


def _world_normals(geo):
    """Unit normals in the world frame, towards the camera; 0 where nothing was hit."""
    rays, axis = geo["rays"], geo["axis"]
    n = np.empty((3,) + axis.shape, np.float32)
    for a in range(3):
        np.multiply(axis == a, rays["negsign"][a], out=n[a])
    curved = np.flatnonzero(axis == _AX_CURVED)
    if curved.size:
        g = geo["geom"][geo["pid"].ravel()[curved]]
        p = geo["t"].ravel()[curved] * rays["d"].reshape(3, -1)[:, curved]
        q = (p - g[:, :3].T) / (g[:, 3:].T ** 2)     # gradient of the ellipsoid equation
        sq = q * q                       # np.linalg.norm's own sum order, without its copies
        norm = sq[0] + sq[1]
        norm += sq[2]
        n.reshape(3, -1)[:, curved] = q / np.sqrt(norm)
    return n


def _camera_normals(n, cam):
    """World-frame normals to camera coordinates (x right, y down, z forward)."""
    c, s = math.cos(cam.pitch), math.sin(cam.pitch)
    out = np.empty_like(n)
    out[0] = n[0]
    np.multiply(n[1], c, out=out[1])
    out[1] -= s * n[2]
    np.multiply(n[1], s, out=out[2])
    out[2] += c * n[2]
    return out


# ----------------------------------------------------------------------------- shading

_NOISE_SLACK = 1 << 16   # offsets available into the flat white-noise table
_NOISE_ROWS = 256        # row offsets available into the 2-D texture tables


@functools.lru_cache(maxsize=4)
def _noise_tables(h, w):
    """Fixed noise textures for one image size (same in every process, fixed seed)."""
    rng = np.random.default_rng(20240607)
    white = rng.standard_normal(3 * h * w + _NOISE_SLACK).astype(np.float32)
    rows = h + _NOISE_ROWS
    base = torch.from_numpy(rng.standard_normal((1, 1, rows, w)).astype(np.float32))
    k = max(1, round(w / 256))          # leaf blobs of ~3 px at width 256, scaled with the width
    leafy = torch.nn.functional.avg_pool2d(base, 2 * k + 1, 1, k, count_include_pad=False)
    cell = w / 24.0                     # cloud / wear-patch features of ~1/24 of the width
    coarse = torch.from_numpy(rng.standard_normal(
        (1, 1, int(math.ceil(rows / cell)) + 2, 26)).astype(np.float32))
    cloudy = torch.nn.functional.interpolate(
        coarse, size=(int(coarse.shape[2] * cell), w), mode="bicubic", align_corners=False)
    tables = dict(white=white, leafy=(leafy / leafy.std())[0, 0].numpy(),
                  cloudy=np.ascontiguousarray((cloudy / cloudy.std())[0, 0, :rows].numpy()))
    for a in tables.values():
        a.setflags(write=False)
    return tables


def _texture(name, offset, h, w, channels=1):
    """A contiguous window (h x w, or channels x h x w of white noise) of a noise table."""
    table = _noise_tables(h, w)[name]
    if name == "white":
        o = int(offset * _NOISE_SLACK)
        shape = (channels, h, w) if channels > 1 else (h, w)
        return table[o:o + channels * h * w].reshape(shape)
    o = int(offset * _NOISE_ROWS)
    return table[o:o + h]


def _lane_markings(scene, px, pz):
    """Mask (over road pixels) of dashed lane lines and solid edge lines, within 60 m."""
    road = scene.road
    q = (px - road["left"]) / road["lane_w"]
    k = np.rint(q)
    near_line = np.abs(q - k) * road["lane_w"] < 0.07
    inner = near_line & (k > 0) & (k < road["n_lanes"])
    cand = np.flatnonzero(inner)         # the dash test (np.mod is slow) only where it matters
    inner[cand] = np.mod(pz[cand], 9.0) < 3.5
    edge = (np.abs(px - road["left"] - 0.3) < 0.07) | (np.abs(px - road["right"] + 0.3) < 0.07)
    return (inner | edge) & (pz < 60.0)


class _Pixels:
    """Flat views of the hit buffers and the world coordinates of selected pixels."""

    def __init__(self, geo):
        self.t = geo["t"].ravel()
        self.pid = geo["pid"].ravel()
        self.pid_p = geo["pid_p"].ravel()
        self.axis = geo["axis"].ravel()
        self.d = geo["rays"]["d"].reshape(3, -1)
        self.height = geo["height"]

    def xyz(self, idx):
        """World X, height above the road, Z of the hit points at flat indices `idx`."""
        t = self.t[idx]
        return t * self.d[0][idx], self.height - t * self.d[1][idx], t * self.d[2][idx]


def _shade(geo, scene, look, domain, cam):
    """Final RGB (3xHxW float32 in [0, 1]) and world normals from the hit buffers."""
    pid = geo["pid"]
    h, w = pid.shape
    n = _world_normals(geo)
    cls = geo["cls_map"]
    sky = pid == 1
    light = np.tensordot(look["sun"].astype(np.float32), n, 1)
    np.maximum(light, 0.0, out=light)
    light *= look["diffuse"]
    light += look["ambient"]
    light[sky] = 1.0
    colour = geo["colour"]
    albedo = np.take(np.ascontiguousarray(colour.T), geo["pid_p"], axis=1)    # 3 x H x W
    flat_albedo, flat_cls = albedo.reshape(3, -1), cls.ravel()
    px_ = _Pixels(geo)
    road = np.flatnonzero(flat_cls == ROAD)
    x, _, z = px_.xyz(road)
    marks = road[_lane_markings(scene, x, z)]
    if domain == "a":
        flat_albedo[:, marks] = 0.95
        rgb = albedo * light
        return np.clip(rgb, 0.0, 1.0, out=rgb), n
    flat_albedo[:, marks] = 0.72                                       # faded paint
    return _shade_real(geo, scene, look, cam, px_, flat_cls, albedo, light, sky, road), n


def _shade_real(geo, scene, look, cam, px_, flat_cls, albedo, light, sky, road):
    """Domain b: textures, cast shadows, haze, sky gradient and camera effects."""
    h, w = sky.shape
    off = look["offsets"]
    shade = light.reshape(-1)           # a view: multiplying it darkens `light` in place
    # Asphalt: grain and wear patches.
    shade[road] *= (1.0 + 0.07 * _texture("white", off[0], h, w).ravel()[road]
                    + 0.08 * _texture("cloudy", off[1], h, w).ravel()[road])
    veg = np.flatnonzero(flat_cls == VEGETATION)
    shade[veg] *= np.clip(0.9 + 0.35 * _texture("leafy", off[2], h, w).ravel()[veg], 0.3, 1.8)
    _facade_windows(geo, px_, albedo.reshape(3, -1), shade, flat_cls)
    _paving(px_, shade, flat_cls)
    _shadows(geo, scene, look, cam, px_, shade, flat_cls)
    rgb = albedo * light
    # Haze towards the horizon colour with distance (exp(-inf) = 0: sky is replaced below).
    horizon = np.array([0.82, 0.85, 0.88], np.float32)[:, None, None]
    fog = np.exp(geo["t"] * (-1.0 / look["haze"]))
    np.subtract(1.0, fog, out=fog)
    tmp = rgb - horizon
    tmp *= fog
    rgb -= tmp
    # Sky: brighter at the horizon, bluer above, soft clouds.
    v_h = (cam.cy - cam.focal * math.tan(cam.pitch)) / h
    up = np.clip((v_h - geo["rays"]["row"]) / max(v_h, 1e-3), 0.0, 1.0)
    zenith = np.array([0.45, 0.60, 0.82], np.float32)[:, None, None]
    sky_rgb = horizon + up[None] * (zenith - horizon)
    rows = np.flatnonzero(sky.any(1))    # only the rows that show sky
    if rows.size:
        r0, r1 = rows[0], rows[-1] + 1
        cloud = _texture("cloudy", off[3], h, w)[r0:r1] * 0.5
        cloud += 0.5
        np.clip(cloud, 0.0, 1.0, out=cloud)
        cloud *= look["clouds"]
        sky_rgb = sky_rgb[:, r0:r1]
        sky_rgb = sky_rgb + cloud * (0.92 - sky_rgb)
        np.copyto(rgb[:, r0:r1], sky_rgb, where=sky[r0:r1])
    # Camera: white balance / exposure, vignetting, slight blur, sensor noise.
    rgb *= look["gains"]
    rgb *= 1.0 - look["vignette"] * geo["rays"]["r2"]
    rgb = _blur(rgb, look["blur"])
    rgb += look["noise"] * _texture("white", off[4], h, w, channels=3)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def _facade_windows(geo, px_, flat_albedo, shade, flat_cls):
    """Window grid and floor bands on building faces, from world coordinates."""
    idx = np.flatnonzero(flat_cls == BUILDING)
    if idx.size == 0:
        return
    x, height, z = px_.xyz(idx)
    pid = px_.pid_p[idx]
    p0, p1, p2, p3 = np.ascontiguousarray(geo["param"].T)   # per-primitive columns
    along = np.where(px_.axis[idx] == _AX_X, z, x)     # horizontal coordinate on the face
    fu = along / np.take(p0, pid) + np.take(p3, pid)
    fu -= np.floor(fu)
    fv = height / np.take(p1, pid)
    fv -= np.floor(fv)
    upper = height > 2.5                                # no windows at street level
    win = np.flatnonzero((fu > 0.3) & (fu < 0.75) & (fv > 0.35) & (fv < 0.8) & upper)
    sel, glass = idx[win], np.take(p2, pid[win])
    for c in range(3):
        flat_albedo[c, sel] *= glass
    shade[idx[(fv < 0.06) & upper]] *= 0.85


def _paving(px_, shade, flat_cls):
    """Paving-stone joints on the sidewalk top faces (within 40 m, beyond they alias)."""
    idx = np.flatnonzero((flat_cls == SIDEWALK) & (px_.axis == _AX_Y))
    x, _, z = px_.xyz(idx)
    near = np.flatnonzero(z < 40.0)      # np.mod is slow: only within 40 m
    x, z = x[near], z[near]
    joint = (np.mod(x, 0.8) < 0.05) | (np.mod(z, 0.8) < 0.05)
    shade[idx[near[joint]]] *= 0.8


def _shadows(geo, scene, look, cam, px_, shade, flat_cls):
    """Darken ground pixels whose ray to the sun is blocked by buildings, walls or vehicles."""
    sx, sy, sz = look["sun"][0], -look["sun"][1], look["sun"][2]   # sy > 0: sun above horizon
    ground = np.flatnonzero((flat_cls == ROAD) | (flat_cls == SIDEWALK))
    if ground.size == 0:
        return
    x, y, z = px_.xyz(ground)
    shadow = np.zeros(ground.shape, bool)
    # Street walls: the ray towards the sun meets the facade line of the sun side at height
    # hc and position zc; shadowed when a building or wall there is taller than hc.
    side = 1 if sx > 0 else -1
    walls = scene.walls[side]
    if abs(sx) > 1e-3 and walls:
        wz0, wz1, wh = np.array(walls, np.float32).T.copy()
        lam = (scene.facades[side] - x) * (1.0 / sx)
        zc, hc = z + lam * sz, y + lam * sy
        j = np.searchsorted(wz0, zc, side="right")
        j -= 1
        np.clip(j, 0, len(wz0) - 1, out=j)
        hit = zc >= np.take(wz0, j)
        hit &= zc < np.take(wz1, j)
        hit &= hc < np.take(wh, j)
        hit &= lam > 0
        shadow |= hit
    if scene.cross is not None and sz > 1e-3:
        lam = (scene.cross[0] - z) * (1.0 / sz)
        shadow |= (lam > 0) & (y + lam * sy < scene.cross[1])
    shade[ground[shadow]] *= look["shadow"]
    _vehicle_shadows(geo, scene, look, cam, shade, (sx, sy, sz))


def _vehicle_shadows(geo, scene, look, cam, shade, sun):
    """Cast shadows of vehicles on the ground, tested only inside each shadow's screen box."""
    sx, sy, sz = sun
    h, w = geo["t"].shape
    shade2d = shade.reshape(h, w)
    inv_x = 1.0 / (sx if abs(sx) > 1e-6 else 1e-6)
    inv_z = 1.0 / (sz if abs(sz) > 1e-6 else 1e-6)
    ground = (geo["axis"] == _AX_Y) & (geo["pid"] != 1)
    d = geo["rays"]["d"]
    for x0, x1, top, z0, z1 in scene.shadow_boxes:
        if z0 > 35.0:                    # far shadows cover a few pixels: not worth a pass
            continue
        # Ground footprint of the shadow: the box swept away from the sun down to the ground.
        reach = top / sy
        xa, xb = min(x0, x0 - reach * sx), max(x1, x1 - reach * sx)
        za, zb = max(min(z0, z0 - reach * sz), 1.0), max(z1, z1 - reach * sz)
        if zb <= za:
            continue
        u, v = _project(cam, np.array([xa, xb, xa, xb]), np.full(4, cam.height),
                        np.array([za, za, zb, zb]))
        v0, v1 = max(int(v.min()), 0), min(int(np.ceil(v.max())) + 1, h)
        u0, u1 = max(int(u.min()), 0), min(int(np.ceil(u.max())) + 1, w)
        if v1 <= v0 or u1 <= u0:
            continue
        sl = (slice(v0, v1), slice(u0, u1))
        m = ground[sl]
        t = geo["t"][sl][m]
        px, pz = t * d[0][sl][m], t * d[2][sl][m]
        py = cam.height - t * d[1][sl][m]
        # Slab test of the sun ray P + lambda * s against the box, lambda > 0.
        ax, bx = (x0 - px) * inv_x, (x1 - px) * inv_x
        az, bz = (z0 - pz) * inv_z, (z1 - pz) * inv_z
        near = np.maximum(np.maximum(np.minimum(ax, bx), np.minimum(az, bz)), 0.0)
        far = np.minimum(np.minimum(np.maximum(ax, bx), np.maximum(az, bz)), (top - py) / sy)
        sub = shade2d[sl]
        sub[m] = np.where(far > near, sub[m] * look["shadow"], sub[m])


def _blur(rgb, amount):
    """Slight separable [c, 1 - 2c, c] blur, c = amount / 4 (camera optics); borders kept."""
    c = amount / 4.0
    out = rgb * (1.0 - 2.0 * c)
    tmp = np.add(rgb[..., :-2], rgb[..., 2:])
    tmp *= c
    out[..., 1:-1] += tmp
    out[..., 0], out[..., -1] = rgb[..., 0], rgb[..., -1]
    res = out * (1.0 - 2.0 * c)
    tmp = np.add(out[:, :-2], out[:, 2:])
    tmp *= c
    res[:, 1:-1] += tmp
    res[:, 0], res[:, -1] = out[:, 0], out[:, -1]
    return res


# ----------------------------------------------------------------------------- public API

def render(domain, split, index, size=(128, 256), seed=0, labels=LABELS):
    """The pure function behind ProceduralScenes: sample dict plus "rgb" (3xHxW in [0, 1])."""
    size, labels = _check(domain, split, size, seed, labels)
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    rng = np.random.default_rng([int(seed), DOMAINS.index(domain), list(SPLITS).index(split),
                                 int(index)])
    cam = camera(domain, size)
    scene = _generate(rng, domain, cam.height)
    look = _appearance(rng, domain)
    geo = _rasterise(scene, cam, size, domain)
    rgb_np, n_world = _shade(geo, scene, look, domain, cam)
    rgb = torch.from_numpy(rgb_np)
    sky = geo["pid"] == 1
    out = {"rgb": rgb, "image": normalize(rgb), "name": sample_name(domain, split, int(index), seed)}
    if "semantic" in labels:
        out["semantic"] = torch.from_numpy(geo["cls_map"])
    if "depth" in labels:
        depth = np.minimum(geo["t"], MAX_DEPTH)
        depth[sky] = 0.0
        out["depth"] = torch.from_numpy(depth)
    if "normals" in labels:
        out["normals"] = torch.from_numpy(_camera_normals(n_world, cam))
    if "edges" in labels:
        out["edges"] = detect_edges(rgb)
    return out


class ProceduralScenes(torch.utils.data.Dataset):
    """One domain and split of the procedural street benchmark (see the module docstring)."""

    def __init__(self, domain="a", split="train", size=(128, 256), seed=0, length=None,
                 labels=("semantic", "depth", "normals", "edges")):
        self.size, self.labels = _check(domain, split, size, seed, labels)
        length = SPLITS[split] if length is None else length
        if not isinstance(length, (int, np.integer)) or length <= 0:
            raise ValueError(f"length must be a positive integer or None, got {length!r}")
        self.domain, self.split, self.seed, self.length = domain, split, int(seed), int(length)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)) or not -self.length <= index < self.length:
            raise _IndexOutOfRange(f"index must be an integer in [0, {self.length}) (negative "
                                   f"indices count from the end), got {index!r}")
        index = int(index) % self.length
        sample = render(self.domain, self.split, index, self.size, self.seed, self.labels)
        del sample["rgb"]  # not part of the sample contract; keeps batches small
        if "depth" in sample:
            sample["focal"] = camera(self.domain, self.size).focal   # px: scores depth models
        return sample

    def __repr__(self):
        return (f"ProceduralScenes(domain={self.domain!r}, split={self.split!r}, size={self.size}, "
                f"seed={self.seed}, length={self.length}, labels={self.labels})")


class _IndexOutOfRange(IndexError, ValueError):
    """ValueError as the API promises, and IndexError so `for x in dataset` stops at the end."""
