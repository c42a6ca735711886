"""Where the face is in a prepared photo: the box a face detector would draw, as fractions of the image.

facenet's pretrained weights were trained on tight face crops (MTCNN boxes plus a small margin, 160 x 160);
prepared photos are whole-head crops. `data.face_crop` (maskgan.run.checkpoints) crops a recogniser's input to this box
so pretrained weights see what they were trained on. Every prepared photo of one dataset is cropped by the same
rule around its face, so the box is a property of the data (of its manifest), the same for every version of a
photo (unmasked, masked, generated, controls: they are pixel-aligned) and for every photo:
  - identity folders (data_loader.identities): exact. Each photo was cropped around its detected face box by the
    rule the manifest records (source.crop: side = enlarge x box side, centre shift_up box sides above the box's),
    so in the crop the detection box sits at the same place for every photo;
  - synthetic faces: nominal. The box of a face of average shape (the people's face width and chin ranges),
    drawn like the identity tree's sidecar boxes; photos move it with their pose and camera distance;
  - FFHQ (+ MaskedFace-Net): approximate. From FFHQ's alignment rule (the crop is centred 0.1 eye-to-mouth
    below the eyes' midpoint, with side 3.6 x eye-to-mouth for a frontal face), taking a dlib-style box from
    the brows (0.35 eye-to-mouth above the eyes) to the chin (0.6 below the mouth).
Data with another source kind has no recorded box (None).
"""

from __future__ import annotations

# The synthetic people (data_loader.faces): cheekbone half-width face_w, chin at y = chin (face units), seen at
# camera scale s ([-1, 1] image coordinates), with means face_w 0.48, chin 0.64, s 1.05; the sidecar box is as
# wide as the face and ends 0.1 box sides above the chin. At the means, in fractions of the image:
SYNTHETIC = (0.248, 0.282, 0.752, 0.786)
# FFHQ: eye-to-mouth = side / 3.6 = 0.278; eyes at 0.5 - 0.1 x 0.278, mouth 0.278 below them (fractions).
_E2M = 1 / 3.6
_EYE_Y = 0.5 - 0.1 * _E2M
FFHQ = (0.5 - 0.27, _EYE_Y - 0.35 * _E2M, 0.5 + 0.27, _EYE_Y + _E2M + 0.6 * _E2M)


def from_crop_rule(enlarge: float, shift_up: float) -> tuple[float, float, float, float]:
    """The detection box inside a crop made by the identity rule (side = enlarge x box side, centre shift_up box
    sides above the box centre), in fractions of the crop."""
    half = 0.5 / enlarge
    cy = 0.5 + shift_up / enlarge
    return (0.5 - half, cy - half, 0.5 + half, cy + half)


def of_manifest(manifest: dict) -> tuple[tuple[float, float, float, float], str] | None:
    """(box (x0, y0, x1, y1) in fractions of the image, how it was found) for prepared data, or None."""
    source = manifest.get("source", {})
    kind = source.get("kind")
    if kind == "identities":
        crop = source.get("crop", {})
        if isinstance(crop.get("enlarge"), (int, float)) and isinstance(crop.get("shift_up"), (int, float)):
            return from_crop_rule(float(crop["enlarge"]), float(crop["shift_up"])), "exact (the crop rule of the manifest)"
        return None
    if kind == "synthetic":
        return SYNTHETIC, "nominal (the synthetic renderer's average face)"
    if kind == "ffhq+maskedfacenet":
        return FFHQ, "approximate (FFHQ's alignment rule)"
    return None
