"""lib.edges.detect_edges against hand-computed responses of flat images and step edges."""
import math

import pytest
import torch

from lib.edges import DEFAULT_TAU, detect_edges


def _step(h=32, w=64, col=32, low=0.0, high=1.0, vertical=True):
    """3xHxW image: `low` left of column `col`, `high` from it on (or rows, if not vertical)."""
    img = torch.full((3, h, w), low)
    if vertical:
        img[..., col:] = high
    else:
        img[:, col:, :] = high
    return img


def _expected_sigma1(contrast, tau=DEFAULT_TAU):
    """Hand computation for sigma = 1 of a step between columns 31 and 32.

    Sampled Gaussian, radius 2, weights w_k = exp(-k^2 / 2) / sum; the smoothed step is
    S[j] = sum of w_k over k >= 32 - j; the central difference at column j is
    (S[j+1] - S[j-1]) / 2; scale normalisation multiplies by sigma * sqrt(2 pi).
    """
    raw = {k: math.exp(-0.5 * k * k) for k in range(-2, 3)}
    total = sum(raw.values())
    w = {k: v / total for k, v in raw.items()}

    def smooth(j):
        return contrast * sum(v for k, v in w.items() if j + k >= 32)

    out = {}
    for j in range(26, 38):
        g = (smooth(j + 1) - smooth(j - 1)) / 2 * math.sqrt(2 * math.pi)
        out[j] = 1 - math.exp(-g / tau)
    return out


def test_constant_image_gives_exact_zeros():
    for value in (0.0, 0.37, 1.0):
        assert torch.equal(detect_edges(torch.full((3, 40, 72), value)), torch.zeros(40, 72))


def test_single_scale_step_matches_hand_computation():
    for contrast in (1.0, 0.2):
        edges = detect_edges(_step(high=contrast), sigmas=(1.0,))
        expected = _expected_sigma1(contrast)
        for col, value in expected.items():
            assert edges[10, col].item() == pytest.approx(value, abs=1e-5), col
        # Every row sees the same step; nothing beyond the kernel's reach.
        assert torch.allclose(edges, edges[:1].expand_as(edges))
        assert edges[:, :28].abs().max() == 0 and edges[:, 36:].abs().max() == 0


def test_multiscale_step_peaks_at_the_step_is_symmetric_and_local():
    edges = detect_edges(_step())
    row = edges[16]
    assert row.argmax().item() in (31, 32)
    assert row[31] == pytest.approx(row.max().item()) and row[32] == pytest.approx(row.max().item())
    mirrored = row.flip(0)  # column j <-> 63 - j: the step sits between 31 and 32
    assert torch.allclose(row, mirrored, atol=1e-5)
    assert row[:8].max() < 1e-3 and row[-8:].max() < 1e-3
    assert row[31] > 0.9  # a unit step is a strong edge


def test_horizontal_step_is_the_transpose_of_the_vertical_one():
    vertical = detect_edges(_step(h=64, w=64, col=32))
    horizontal = detect_edges(_step(h=64, w=64, col=32, vertical=False))
    assert torch.allclose(vertical.T, horizontal, atol=1e-5)


def test_same_edge_same_value_in_different_images():
    # No per-image normalisation: a far-away strong edge must not change a weak edge's value.
    weak = _step(w=96, col=32, high=0.2)
    both = weak.clone()
    both[..., 80:] = 1.0
    assert torch.allclose(detect_edges(weak)[:, 20:44], detect_edges(both)[:, 20:44], atol=1e-6)
    # And a stronger step gives a stronger response.
    assert detect_edges(_step(high=0.5))[5, 31] > detect_edges(_step(high=0.2))[5, 31]


def test_range_batch_equals_single_and_determinism():
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(3, 3, 37, 53, generator=g)  # odd sizes exercise the pyramid padding
    out = detect_edges(batch)
    assert out.shape == (3, 37, 53) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    for i in range(3):
        assert torch.allclose(detect_edges(batch[i]), out[i], atol=1e-6)
    assert torch.equal(detect_edges(batch), out)


def test_tiny_images_and_bad_input():
    assert detect_edges(torch.rand(3, 4, 5)).shape == (4, 5)
    with pytest.raises(ValueError, match="3xHxW"):
        detect_edges(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="sigmas"):
        detect_edges(torch.rand(3, 8, 8), sigmas=(0.0,))
