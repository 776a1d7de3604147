"""Palettes, colouring functions, panels and PNG writing."""
import numpy as np
import pytest
import torch
from PIL import Image

from lib import vis
from lib.data.labels import CLASS_NAMES


def _luminance(rgb):
    """Rec. 601 luma of uint8 RGB values."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("k", [19, 16, 13, 7, 11])
def test_palette_sizes(k):
    palette = vis.PALETTES[k]
    assert palette.shape == (k, 3) and palette.dtype == np.uint8
    assert len(CLASS_NAMES[k]) == k


def test_palettes_use_cityscapes_colours():
    assert vis.PALETTES[19][0].tolist() == [128, 64, 128]  # road
    assert vis.PALETTES[19][18].tolist() == [119, 11, 32]  # bicycle
    assert vis.PALETTES[11][7].tolist() == [0, 0, 142]  # vehicle = car colour
    assert vis.PALETTES[11][8].tolist() == [220, 220, 0]  # traffic sign
    assert vis.PALETTES[7][4].tolist() == [70, 130, 180]  # sky


def test_colorize_semantic_shape_and_ignore():
    labels = torch.tensor([[0, 1, 255], [18, -1, 19]])
    rgb = vis.colorize_semantic(labels, 19)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [128, 64, 128]
    assert rgb[1, 0].tolist() == [119, 11, 32]
    for y, x in [(0, 2), (1, 1), (1, 2)]:  # ignore, negative, past the last class
        assert rgb[y, x].tolist() == [0, 0, 0]


def test_colorize_depth_near_brighter_than_far():
    depth = np.array([[1.0, 10.0, 100.0, 0.0]])
    rgb = vis.colorize_depth(depth)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    luma = _luminance(rgb[0])
    assert luma[0] > luma[1] > luma[2]
    assert rgb[0, 3].tolist() == [0, 0, 0]  # invalid
    assert rgb[0, 0].tolist() == [252, 253, 191]  # nearest = top of the map


def test_colorize_depth_fixed_scale_and_edge_cases():
    a = vis.colorize_depth(torch.tensor([[5.0, 50.0]]), max_depth=80, min_depth=1)
    b = vis.colorize_depth(torch.tensor([[5.0, 20.0]]), max_depth=80, min_depth=1)
    assert a[0, 0].tolist() == b[0, 0].tolist()  # same depth, same colour on a fixed scale
    assert not vis.colorize_depth(np.zeros((2, 2))).any()  # nothing valid
    assert vis.colorize_depth(np.full((2, 2), 3.0)).any()  # constant depth stays visible


def test_colorize_normals():
    normals = torch.zeros(3, 2, 2)
    normals[:, 0, 0] = torch.tensor([0.0, 0.0, -1.0])  # facing the camera
    normals[:, 0, 1] = torch.tensor([1.0, 0.0, 0.0])
    rgb = vis.colorize_normals(normals)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [128, 128, 0]
    assert rgb[0, 1].tolist() == [255, 128, 128]
    assert rgb[1, 1].tolist() == [0, 0, 0]  # invalid


def test_colorize_gray_and_rgb():
    gray = vis.colorize_gray(np.array([[0.0, 0.5, 1.0, 2.0]]))
    assert gray.shape == (1, 4, 3)
    assert gray[0, :, 0].tolist() == [0, 128, 255, 255]
    image = torch.zeros(3, 2, 5)
    image[0] = 1.0
    rgb = vis.to_rgb_uint8(image)
    assert rgb.shape == (2, 5, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 0, 0]


def test_make_panel_size_arithmetic():
    big = np.full((10, 20, 3), 7, dtype=np.uint8)
    small = np.full((5, 10, 3), 9, dtype=np.uint8)
    panel = vis.make_panel([[big, small, big], [small]], pad=3)
    assert panel.shape == (2 * 10 + 3 * 3, 3 * 20 + 4 * 3, 3)
    # The small tile is resized (nearest) to the first tile's size.
    assert (panel[3:13, 3 + 20 + 3:3 + 40 + 3] == 9).all()
    assert (panel[0, :] == 255).all()  # padding
    assert (panel[13 + 3:, 3 + 20 + 3:] == 255).all()  # missing tiles stay blank


def test_make_panel_titles():
    tile = np.zeros((40, 80, 3), dtype=np.uint8)
    plain = vis.make_panel([[tile, tile]])
    titled = vis.make_panel([[tile, tile]], titles=[["pred", None]])
    assert titled.shape == plain.shape
    assert titled[2:42, 2:82].any()  # text drawn on the first tile
    assert not titled[2:42, 84:164].any()  # the untitled tile is untouched


def test_save_png_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "panel.png"
    vis.save_png(array, path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    assert [p.name for p in path.parent.iterdir()] == ["panel.png"]  # no temp file left


def test_generic_palette_for_class_sets_without_names():
    """ISPRS (6), NYUv2-40 or a folder dataset get distinct colours instead of a KeyError."""
    from lib.vis import colorize_semantic
    for k in (6, 40):
        rgb = colorize_semantic(np.arange(k).reshape(1, k), k)
        assert len({tuple(c) for c in rgb[0]}) == k
        assert (colorize_semantic(np.array([[255]]), k) == 0).all()   # ignore stays black
