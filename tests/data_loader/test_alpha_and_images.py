"""Per-image pieces of `data prepare`: decoding odd inputs to RGB, and alpha labels derived from pairs."""

import io

import numpy as np
import pytest
from PIL import Image

from data_loader import alpha, synth
from data_loader.prepare import BadImage, load_rgb


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_derived_alpha_matches_synthetic_ground_truth():
    """Masked photo saved as JPEG (q90), original as PNG, both at 256² and prepared at 128² like FFHQ."""
    rng = np.random.default_rng(7)
    ious = []
    for _ in range(40):
        un, ma, al = synth.render(synth.identity_params(rng), rng, 256)
        masked, _ = load_rgb(_encode(Image.fromarray(ma), "JPEG", quality=90), 128)
        unmasked, _ = load_rgb(_encode(Image.fromarray(un), "PNG"), 128)
        label, why = alpha.derive(masked, unmasked)
        assert label is not None, why
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 255}
        truth = np.asarray(Image.fromarray(al).resize((128, 128), Image.Resampling.BILINEAR)) > 127
        ious.append(_iou(label > 127, truth))
    print(f"derived alpha IoU vs synthetic truth: mean {np.mean(ious):.3f}, min {np.min(ious):.3f}")
    assert np.mean(ious) >= 0.9
    assert np.min(ious) >= 0.8


def test_alpha_refuses_pairs_that_are_not_a_masked_photo_of_the_original():
    rng = np.random.default_rng(1)
    un, ma, _ = synth.render(synth.identity_params(rng), rng, 128)
    other, _, _ = synth.render(synth.identity_params(rng), rng, 128)
    label, why = alpha.derive(un, un)
    assert label is None and "no mask found" in why
    label, why = alpha.derive(np.full_like(un, 255), np.zeros_like(un))
    assert label is None and "not the same photo" in why


def test_connected_components_keep_the_largest_region_and_fill_its_holes():
    fg = np.zeros((40, 40), bool)
    fg[5:30, 5:30] = True
    fg[12:18, 12:18] = False  # a hole
    fg[35:38, 35:38] = True  # a speck elsewhere
    fg[2, 30:39] = True  # a thin line elsewhere
    out = alpha.fill_holes(alpha.largest_component(fg))
    expected = np.zeros_like(fg)
    expected[5:30, 5:30] = True
    assert np.array_equal(out, expected)
    spiral = np.zeros((30, 30), bool)  # a long thin region: one component
    spiral[1, 1:29] = spiral[1:29, 28] = spiral[28, 3:29] = spiral[3:29, 3] = spiral[3, 3:26] = True
    lab = alpha.label_components(spiral)
    assert len(np.unique(lab[spiral])) == 1


@pytest.mark.parametrize("make,conversion", [
    (lambda a: _encode(Image.fromarray(a).convert("L"), "PNG"), "L->RGB"),
    (lambda a: _encode(Image.fromarray(a).convert("CMYK"), "JPEG"), "CMYK->RGB"),
    (lambda a: _encode(Image.fromarray(np.asarray(Image.fromarray(a).convert("L")).astype(np.uint16) * 257), "PNG"),
     "I;16->RGB"),
    (lambda a: _encode(Image.fromarray(a).convert("P"), "PNG"), "P->RGB"),
    (lambda a: _encode(Image.fromarray(a).convert("RGBA"), "PNG"), "RGBA->RGB"),
    (lambda a: _encode(Image.fromarray(a[:, :100]), "JPEG"), "100x128 centre-cropped to square"),
])
def test_odd_images_are_converted_to_rgb(make, conversion):
    rng = np.random.default_rng(0)
    un, _, _ = synth.render(synth.identity_params(rng), rng, 128)
    img, conversions = load_rgb(make(un), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert conversions == [conversion]
    if "cropped" not in conversion:  # the picture survives the conversion (gray versions: its luminance)
        ref = np.asarray(Image.fromarray(un).resize((64, 64), Image.Resampling.LANCZOS)).astype(float)
        if conversion in ("L->RGB", "I;16->RGB"):
            ref = np.repeat(ref.mean(-1, keepdims=True), 3, -1)
        assert np.abs(img.astype(float) - ref).mean() < 12


def test_unusable_images_raise_with_a_reason():
    rng = np.random.default_rng(0)
    un, _, _ = synth.render(synth.identity_params(rng), rng, 128)
    png = _encode(Image.fromarray(un), "PNG")
    jpeg = _encode(Image.fromarray(un), "JPEG")
    cases = [(b"", "empty file"), (png[: len(png) // 2], "truncated"), (jpeg[: len(jpeg) // 2], "truncated"),
             (b"GIF89a not really" * 10, "cannot decode"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "cannot decode"),
             (_encode(Image.fromarray(un[:20, :20]), "PNG"), "too small")]
    for data, reason in cases:
        with pytest.raises(BadImage, match=reason):
            load_rgb(data, 64)
