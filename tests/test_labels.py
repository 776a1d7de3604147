"""Class maps checked against the Cityscapes label table and the papers' class lists."""
import numpy as np
import pytest
import torch

from lib.data import labels as L

# labelIds written out by hand from the papers' class lists, independent of how labels.py builds its tables.
IDS_19 = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
IDS_16 = [7, 8, 11, 12, 13, 17, 19, 20, 21, 23, 24, 25, 26, 28, 32, 33]
IDS_7 = {0: [7, 8], 1: [11, 12, 13], 2: [17, 19, 20], 3: [21, 22], 4: [23], 5: [24, 25],
         6: list(range(26, 34))}
IDS_11 = {0: [7], 1: [8], 2: [12], 3: [13], 4: [24], 5: [17], 6: [21], 7: [26, 32],
          8: [19, 20], 9: [11], 10: [23]}
SYNTHIA_16 = [3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11]
SYNTHIA_7 = {0: [3, 4, 22], 1: [2, 5], 2: [7, 9, 15], 3: [6], 4: [1], 5: [10], 6: [8, 11]}


def _expected_lut(groups):
    """A 256-entry LUT from {class index: [source ids]}."""
    lut = np.full(256, 255, dtype=np.int64)
    for index, ids in groups.items():
        lut[ids] = index
    return lut


def test_label_table_is_complete():
    ids = sorted(label.id for label in L.LABELS)
    assert ids == [-1] + list(range(34))
    assert sorted(lab.trainId for lab in L.LABELS if 0 <= lab.trainId < 255) == list(range(19))
    # A label is evaluated exactly when it has a train id.
    for label in L.LABELS:
        assert label.ignoreInEval == (label.trainId not in range(19)), label.name


@pytest.mark.parametrize("k", [19, 16, 13, 7, 11])
def test_maps_are_int64_luts(k):
    lut = L.CITYSCAPES_TO[k]
    assert lut.shape == (256,) and lut.dtype == np.int64
    used = sorted(set(lut.tolist()) - {255})
    assert used == list(range(k))
    assert len(L.CLASS_NAMES[k]) == k
    assert not lut.flags.writeable


def test_19_classes_follow_train_ids():
    lut = L.CITYSCAPES_TO[19]
    assert sorted(np.flatnonzero(lut != 255).tolist()) == IDS_19
    for label in L.LABELS:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId < 19 else 255
        assert lut[label.id] == expected, label.name
        if expected != 255:
            assert L.CLASS_NAMES[19][expected] == label.name


def test_16_classes():
    lut = L.CITYSCAPES_TO[16]
    np.testing.assert_array_equal(lut, _expected_lut({i: [t] for i, t in enumerate(IDS_16)}))
    for index, name in enumerate(L.CLASS_NAMES[16]):
        assert L.NAME_TO_LABEL[name].id == IDS_16[index]


def test_13_classes_are_16_without_wall_fence_pole():
    lut16, lut13 = L.CITYSCAPES_TO[16], L.CITYSCAPES_TO[13]
    removed = {"wall", "fence", "pole"}
    assert L.CLASS_NAMES[13] == tuple(n for n in L.CLASS_NAMES[16] if n not in removed)
    for label_id in range(256):
        name16 = L.CLASS_NAMES[16][lut16[label_id]] if lut16[label_id] != 255 else None
        if name16 is None or name16 in removed:
            assert lut13[label_id] == 255
        else:
            assert L.CLASS_NAMES[13][lut13[label_id]] == name16
    # Going 16 -> 13 through remap_16_to_13 gives the direct 13-class map.
    np.testing.assert_array_equal(L.apply_map(L.remap_16_to_13, lut16), lut13)


def test_7_classes_group_by_category():
    lut = L.CITYSCAPES_TO[7]
    np.testing.assert_array_equal(lut, _expected_lut(IDS_7))
    for label_id in np.flatnonzero(lut != 255):
        assert L.ID_TO_LABEL[int(label_id)].category == L.CLASS_NAMES[7][lut[label_id]]
    # Every evaluated 19-class label lands in its own category.
    for label_id in IDS_19:
        assert L.CLASS_NAMES[7][lut[label_id]] == L.ID_TO_LABEL[label_id].category


def test_11_classes():
    np.testing.assert_array_equal(L.CITYSCAPES_TO[11], _expected_lut(IDS_11))
    assert L.CLASS_NAMES[11] == ("road", "sidewalk", "wall", "fence", "person", "pole",
                                 "vegetation", "vehicle", "traffic sign", "building", "sky")
    assert L.CITYSCAPES_TO[11][L.NAME_TO_LABEL["rider"].id] == 255


def test_synthia_maps_match_reference():
    np.testing.assert_array_equal(
        L.SYNTHIA_TO[16], _expected_lut({i: [s] for i, s in enumerate(SYNTHIA_16)})
    )
    np.testing.assert_array_equal(L.SYNTHIA_TO[7], _expected_lut(SYNTHIA_7))


@pytest.mark.parametrize("k", [16, 13, 7, 11])
def test_train19_maps_agree_with_label_id_maps(k):
    # Mapping labelId -> 19 -> k must equal mapping labelId -> k, on the 19 evaluated labels.
    ids = np.array(IDS_19)
    via_19 = L.apply_map(L.TRAIN19_TO[k], L.apply_map(L.CITYSCAPES_TO[19], ids))
    np.testing.assert_array_equal(via_19, L.CITYSCAPES_TO[k][ids])
    assert (L.TRAIN19_TO[k][19:] == 255).all()


def test_trainid_to_labelid_round_trip():
    train_ids = np.arange(19)
    label_ids = L.apply_map(L.TRAINID_TO_LABELID_19, train_ids)
    assert label_ids.tolist() == IDS_19
    np.testing.assert_array_equal(L.apply_map(L.CITYSCAPES_TO[19], label_ids), train_ids)
    assert L.TRAINID_TO_LABELID_19[255] == 0  # ignore is written as 'unlabeled'


def test_apply_map_tensor_out_of_range():
    ids = torch.tensor([[-1, 7, 33], [34, 255, 1000]], dtype=torch.int32)
    out = L.apply_map(L.CITYSCAPES_TO[19], ids)
    assert out.dtype == torch.int64 and out.shape == ids.shape
    assert out.tolist() == [[255, 0, 18], [255, 255, 255]]


def test_apply_map_uint8_tensor_and_torch_lut():
    ids = torch.tensor([7, 26, 0], dtype=torch.uint8)
    lut = torch.from_numpy(L.CITYSCAPES_TO[7].copy())
    assert L.apply_map(lut, ids).tolist() == [0, 6, 255]


def test_apply_map_numpy_out_of_range():
    ids = np.array([[-3, 8], [23, 70000]], dtype=np.int64)
    out = L.apply_map(L.CITYSCAPES_TO[16], ids)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64
    assert out.tolist() == [[255, 1], [9, 255]]


def test_apply_map_short_lut():
    lut = np.array([2, 1, 0])
    assert L.apply_map(lut, np.array([0, 1, 2, 3, -1])).tolist() == [2, 1, 0, 255, 255]


def test_apply_map_rejects_float_ids():
    with pytest.raises(TypeError):
        L.apply_map(L.CITYSCAPES_TO[19], torch.zeros(2))
    with pytest.raises(TypeError):
        L.apply_map(L.CITYSCAPES_TO[19], np.zeros(2))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_apply_map_stays_on_device():
    ids = torch.tensor([7, 8, 300], device="cuda")
    out = L.apply_map(L.CITYSCAPES_TO[19], ids)
    assert out.device == ids.device and out.tolist() == [0, 1, 255]
