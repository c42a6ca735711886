"""data.face_crop: facenet's pretrained weights see the face crop they were trained on."""

import numpy as np
import pytest
import torch

from data_loader import face_box, landmark_mask
from maskgan.models.recognizer import FACE_SIDE, build_recognizer, crop_box
from maskgan.run import build

IDENTITIES = {"source": {"kind": "identities", "crop": landmark_mask.CROP}}


@pytest.mark.parametrize("box", [(40.0, 50.0, 90.0, 100.0), (300.0, 120.0, 520.0, 340.0)])
def test_the_identity_rule_puts_the_detection_box_where_the_manifest_says(box):
    # What prepare does to a photo (its detection box -> the head crop -> size x size) moves the box to the
    # place of_manifest records, for any box: the recorded box is the face of every prepared photo.
    size = 128
    square = landmark_mask.crop_box(np.array(box))
    corners = landmark_mask.to_crop(np.array([box[:2], box[2:]]), square, size) / size
    recorded, how = face_box.of_manifest(IDENTITIES)
    assert np.allclose(corners.ravel(), recorded, atol=1.5 / size), (corners.ravel(), recorded)
    assert how.startswith("exact")


def test_face_crop_modes_choose_the_crop_the_weights_were_trained_on():
    box = face_box.of_manifest(IDENTITIES)[0]
    assert build.face_crop("auto", "vggface2", IDENTITIES) == box  # pretrained: face crops
    assert build.face_crop("auto", "casia-webface", IDENTITIES) == box
    assert build.face_crop("auto", "random", IDENTITIES) is None  # random / adapted weights: whole photos
    assert build.face_crop("auto", "/tmp/recognizer.pt", IDENTITIES) is None
    assert build.face_crop("full", "vggface2", IDENTITIES) is None
    assert build.face_crop("face", "random", {"source": {"kind": "synthetic"}}) == face_box.SYNTHETIC
    assert build.face_crop("auto", "vggface2", {"source": {"kind": "bench"}}) is None  # no box: whole photo
    with pytest.raises(build.FaceCropError, match=r"^data.face_crop face: the data at s3://b/d records no face box"):
        build.face_crop("face", "vggface2", {"source": {"kind": "bench"}}, "s3://b/d")


def test_a_cropping_trunk_sees_the_face_box_only_and_passes_gradients_through_it():
    size = 96
    trunk, _ = build_recognizer(None)
    trunk.face_box = face_box.of_manifest(IDENTITIES)[0]
    y0, y1, x0, x1 = crop_box(trunk.face_box, size)
    assert 0 < y0 < y1 < size and 0 < x0 < x1 < size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = trunk(x)
    outside = x.clone()
    outside[:, :, :y0] = 0.0  # above the crop: the hair, the background
    assert torch.equal(trunk(outside), base)
    inside = x.clone()
    inside[:, :, (y0 + y1) // 2, x0:x1] = 1.0  # one row through the face
    assert not torch.allclose(trunk(inside), base)
    x.requires_grad_(True)
    trunk(x).sum().backward()
    grad = x.grad.abs().sum(1)
    assert grad[:, y0:y1, x0:x1].sum() > 0 and grad[:, :y0].sum() == 0  # the generator's gradient reaches the face
    full, _ = build_recognizer(None)
    assert not torch.equal(full(x.detach()), base)  # without a box: the whole photo, as before
    assert FACE_SIDE == 160
