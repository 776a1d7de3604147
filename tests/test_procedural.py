"""Procedural benchmark: sample contract, determinism, geometry and the two domains."""
import functools
import math

import pytest
import torch

from lib.data import procedural as P
from lib.data.transforms import normalize
from lib.edges import detect_edges

SIZE = (64, 128)


@functools.lru_cache(maxsize=None)
def _sample(domain, index, split="train", size=SIZE, seed=0):
    """Cached render: the tests only read the tensors."""
    return P.render(domain, split, index, size=size, seed=seed)


def _samples(domain, n=6):
    return [_sample(domain, i) for i in range(n)]


def _ray_dirs(cam, h, w):
    """Camera-frame ray (x, y, 1) through every pixel centre, written out independently."""
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([(u - cam.cx) / cam.focal, (v - cam.cy) / cam.focal, torch.ones(h, w)])


@pytest.mark.parametrize("domain", P.DOMAINS)
def test_sample_contract(domain):
    s = _sample(domain, 3)
    h, w = SIZE
    assert set(s) == {"rgb", "image", "semantic", "depth", "normals", "edges", "name"}
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
    assert s["semantic"].shape == (h, w) and s["semantic"].dtype == torch.int64
    assert s["depth"].shape == (h, w) and s["depth"].dtype == torch.float32
    assert s["normals"].shape == (3, h, w) and s["normals"].dtype == torch.float32
    assert s["edges"].shape == (h, w) and s["edges"].dtype == torch.float32
    assert s["name"] == f"proc-{domain}/train/000003"
    assert s["rgb"].min() >= 0 and s["rgb"].max() <= 1
    assert torch.allclose(s["image"], normalize(s["rgb"]))
    # Edges are the shared proxy-label path applied to the final image.
    assert torch.equal(s["edges"], detect_edges(s["rgb"]))
    assert 0 <= s["edges"].min() and s["edges"].max() <= 1
    assert len(P.CLASSES) == 11 and P.CLASSES[0] == "road" and P.CLASSES[10] == "sky"


def test_dataset_length_labels_subset_and_iteration():
    ds = P.ProceduralScenes("b", "val", size=SIZE, labels=("semantic",))
    assert len(ds) == P.SPLITS["val"]
    s = ds[0]
    assert set(s) == {"image", "semantic", "name"}
    assert torch.equal(s["semantic"], _sample("b", 0, "val")["semantic"])
    assert torch.equal(ds[-1]["image"], ds[len(ds) - 1]["image"])
    small = P.ProceduralScenes("a", "test", size=(16, 32), length=3, labels=("depth", "edges"))
    items = list(small)  # iteration stops at the end (the index error is an IndexError too)
    assert len(items) == 3 and all(set(x) == {"image", "depth", "edges", "name", "focal"} for x in items)
    assert items[0]["focal"] == P.camera("a", (16, 32)).focal   # px, for scoring depth models


def test_same_index_is_identical_across_calls_and_processes():
    a, b = P.render("a", "train", 5, size=SIZE), P.render("a", "train", 5, size=SIZE)
    for key in ("image", "semantic", "depth", "normals", "edges"):
        assert torch.equal(a[key], b[key]), key
    ds = P.ProceduralScenes("b", "train", size=(32, 64), length=6)
    serial = next(iter(torch.utils.data.DataLoader(ds, batch_size=6, num_workers=0)))
    workers = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    parallel = list(workers)
    for key in ("image", "semantic", "depth", "normals", "edges"):
        assert torch.equal(serial[key], torch.cat([batch[key] for batch in parallel])), key
    assert serial["name"] == [name for batch in parallel for name in batch["name"]]


def test_different_index_split_seed_and_domain_differ():
    base = _sample("a", 0)
    for other in (_sample("a", 1), _sample("a", 0, split="val"), _sample("a", 0, seed=1),
                  _sample("b", 0)):
        assert not torch.equal(base["semantic"], other["semantic"])
        assert not torch.equal(base["image"], other["image"])
    assert _sample("a", 0, seed=1)["name"] == "proc-a-seed1/train/000000"


@pytest.mark.parametrize("domain", P.DOMAINS)
def test_labels_agree_sky_depth_normals(domain):
    for s in _samples(domain):
        sem, depth, normals = s["semantic"], s["depth"], s["normals"]
        assert sem.min() >= 0 and sem.max() <= 10
        sky = sem == 10
        assert torch.equal(sky, depth == 0)
        assert torch.equal(sky, (normals == 0).all(0))
        valid = ~sky
        assert (depth[valid] > 0).all() and (depth <= P.MAX_DEPTH).all()
        norm = normals.norm(dim=0)[valid]
        assert torch.allclose(norm, torch.ones_like(norm), atol=1e-4)
        # Normals face the camera: negative dot product with the viewing ray.
        rays = _ray_dirs(P.camera(domain, SIZE), *SIZE)
        assert ((normals * rays).sum(0)[valid] < 1e-4).all()


@pytest.mark.parametrize("domain", P.DOMAINS)
def test_road_lies_on_the_ground_plane(domain):
    cam = P.camera(domain, SIZE)
    h, w = SIZE
    rows = (torch.arange(h, dtype=torch.float64) + 0.5)[:, None].expand(h, w)
    # Ray (x, y, 1) meets the plane at height cam.height below the camera, the camera being
    # pitched down by cam.pitch: z = f h / ((v - cy) cos(pitch) + f sin(pitch)).
    denom = (rows - cam.cy) * math.cos(cam.pitch) + cam.focal * math.sin(cam.pitch)
    expected = (cam.focal * cam.height / denom).clamp(max=P.MAX_DEPTH).float()
    ground_normal = torch.tensor([0.0, -math.cos(cam.pitch), -math.sin(cam.pitch)])
    for s in _samples(domain, 4):
        road = s["semantic"] == 0
        assert road.sum() > 0.1 * h * w
        assert torch.allclose(s["depth"][road], expected[road], rtol=1e-3)
        n = s["normals"][:, road]
        assert torch.allclose(n, ground_normal[:, None].expand_as(n), atol=1e-5)
        assert torch.allclose(n, torch.tensor([0.0, -1.0, 0.0])[:, None].expand_as(n), atol=0.05)
    if cam.pitch == 0:  # the level camera's textbook form
        v = torch.tensor(50.5)
        assert P.ground_depth(cam, v) == pytest.approx(cam.focal * cam.height / (v - cam.cy))


@pytest.mark.parametrize("domain", P.DOMAINS)
def test_layout_road_low_sky_high(domain):
    rows = torch.arange(SIZE[0], dtype=torch.float32)[:, None].expand(SIZE)
    for s in _samples(domain):
        road, sky = s["semantic"] == 0, s["semantic"] == 10
        assert rows[road].mean() > 0.6 * SIZE[0]
        if sky.any():
            assert rows[sky].mean() < 0.4 * SIZE[0]
    present = torch.zeros(11, dtype=torch.bool)
    for s in _samples(domain, 12):
        present |= torch.bincount(s["semantic"].flatten(), minlength=11) > 0
    assert present.all(), [c for c, p in zip(P.CLASSES, present) if not p]


def test_domains_differ_in_class_colours():
    def mean_colours(domain):
        sums, counts = torch.zeros(11, 3), torch.zeros(11)
        for s in _samples(domain):
            sem = s["semantic"].flatten()
            sums.index_add_(0, sem, s["rgb"].reshape(3, -1).T)
            counts += torch.bincount(sem, minlength=11)
        return sums / counts.clamp(min=1)[:, None]

    a, b = mean_colours("a"), mean_colours("b")
    for cls in ("road", "sidewalk", "vegetation", "vehicle", "building", "sky"):
        k = P.CLASSES.index(cls)
        assert (a[k] - b[k]).norm() > 0.1, cls


def test_domain_b_is_noisier_and_domain_a_is_flat():
    # Domain a: a flat material gives exactly repeated colours; domain b: textures and noise.
    def neighbour_change(s):
        """Median colour change between horizontally adjacent road pixels."""
        road = s["semantic"] == 0
        both = road[:, 1:] & road[:, :-1]
        step = (s["rgb"][:, :, 1:] - s["rgb"][:, :, :-1]).abs().sum(0)
        return step[both].median().item()

    a, b = _sample("a", 0), _sample("b", 0)
    assert neighbour_change(a) == 0 and neighbour_change(b) > 0.005
    road_a = a["rgb"][:, a["semantic"] == 0]
    assert torch.unique(road_a, dim=1).shape[1] == 2  # asphalt and lane paint, nothing else


def test_same_scene_at_any_resolution():
    small = _sample("b", 2)["semantic"]
    big = P.render("b", "train", 2, size=(2 * SIZE[0], 2 * SIZE[1]), labels=("semantic",))
    # A small pixel's centre lies on the corner of 2x2 big pixels: compare with one of them.
    agree = (big["semantic"][1::2, 1::2] == small).float().mean()
    assert agree > 0.9
    cam_small, cam_big = P.camera("b", SIZE), P.camera("b", (128, 256))
    assert cam_big.focal == 2 * cam_small.focal == 2 * P.FOCAL_REF["b"] * SIZE[1] / 256


@pytest.mark.parametrize("kwargs, word", [
    (dict(domain="c"), "domain"), (dict(split="training"), "split"), (dict(size=(0, 64)), "size"),
    (dict(size=(64,)), "size"), (dict(seed=-1), "seed"), (dict(labels=("depth", "rgb")), "labels"),
    (dict(length=0), "length"),
])
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        P.ProceduralScenes(**kwargs)


def test_bad_index():
    ds = P.ProceduralScenes("a", "val", size=(16, 32), length=4)
    for index in (4, -5, 1.5):
        with pytest.raises(ValueError, match="index"):
            ds[index]
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(ValueError, match="index"):
        P.render("a", "val", -1)
