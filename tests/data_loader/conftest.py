"""A small fake FFHQ + MaskedFace-Net tree, written through the storage layer (local dir or a bucket on moto).

Faces come from data_loader.synth.render, so every pair has a known true alpha. The tree mixes both naming
schemes, flat and nested layouts, and the awkward inputs a real download has: grayscale, 16-bit, CMYK, RGBA,
non-square and larger-than-output images (converted), and truncated, garbage, zero-byte, unpaired and
duplicate files (skipped and listed). `write_sources` returns what prepare must find.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from data_loader import shards, storage, synth

SIZE = 128  # output size prepare is asked for


@dataclass
class Expected:
    identities: list[str]  # good identities, sorted (gallery labels 0..N-1)
    counts: dict  # split -> variant -> probe rows
    bad: set[str]  # URIs of unusable files (kind "bad")
    partner_bad: set[str]
    unpaired: set[str]
    duplicate: set[str]
    converted: set[str]
    ignored: set[str]
    alpha: dict = field(default_factory=dict)  # identity -> true alpha at SIZE (bool)
    inputs: int = 0  # recognised image files (FFHQ + MaskedFace-Net)


def pick_numbers(want: dict[str, int], start: int = 100) -> list[int]:
    """Numbers whose stable split gives `want` identities per split (so every split is represented)."""
    got, left = [], dict(want)
    n = start
    while any(left.values()):
        s = shards.split_of(f"{n:05d}")
        if left.get(s, 0) > 0:
            got.append(n)
            left[s] -= 1
        n += 1
    return sorted(got)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray, mode: str = "RGB", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png16_gray(arr: np.ndarray) -> bytes:
    gray = np.asarray(Image.fromarray(arr).convert("L")).astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")  # mode I;16
    return buf.getvalue()


def _upscale(arr: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC))


def _pad_wide(arr: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(arr, ((0, 0), (pad, pad), (0, 0)) if arr.ndim == 3 else ((0, 0), (pad, pad)), mode="edge")


VARIANT_SUFFIX = {"cmfd": "_Mask", "imfd_mouth_chin": "_Mask_Mouth_Chin", "imfd_chin": "_Mask_Chin",
                  "imfd_nose_mouth": "_Mask_Nose_Mouth"}
PLAN = [["cmfd", "imfd_chin"], ["cmfd"], ["imfd_mouth_chin"], ["cmfd", "imfd_nose_mouth"]]


def write_sources(base: str, seed: int = 0) -> Expected:
    """Write base/ffhq and base/mfn; return what a correct prepare reports."""
    rng = np.random.default_rng(seed)
    ffhq, mfn = storage.resolve(f"{base}/ffhq"), storage.resolve(f"{base}/mfn")
    numbers = pick_numbers({"train": 8, "val": 2, "test": 2})
    ex = Expected(identities=[f"{n:05d}" for n in numbers], counts={s: {} for s in shards.SPLITS}, bad=set(),
                  partner_bad=set(), unpaired=set(), duplicate=set(), converted=set(), ignored=set())

    def put(loc: storage.Location, rel: str, data: bytes) -> str:
        storage.write_bytes(loc.join(rel), data)
        ex.inputs += not rel.endswith((".txt", ".md"))
        return loc.join(rel).uri

    def face():
        while True:  # a face whose mask stands out in gray too (the grayscale cases need luminance contrast)
            p = synth.identity_params(rng)
            un, ma, al = synth.render(p, rng, SIZE)
            diff = np.abs(un.astype(int).mean(-1) - ma.astype(int).mean(-1))[al > 127]
            if diff.mean() > 30 and np.percentile(diff, 10) > 12:  # and nowhere under the mask close to the face
                return un, ma, al

    for i, n in enumerate(numbers):
        ident = f"{n:05d}"
        un, ma, al = face()
        ex.alpha[ident] = al > 127
        split = shards.split_of(ident)
        f_rel = f"{ident}.png" if i % 2 == 0 else f"{n // 1000 * 1000:05d}/{ident}.png"
        f_bytes, m_enc, convert_f, convert_m = _png(un), (lambda a: _jpeg(a)), False, False
        if i == 0:  # grayscale photo, grayscale masked image
            f_bytes, m_enc, convert_f, convert_m = _png(un, "L"), (lambda a: _jpeg(a, "L")), True, True
        elif i == 1:  # 16-bit grayscale photo
            f_bytes, m_enc, convert_f, convert_m = _png16_gray(un), (lambda a: _jpeg(a, "L")), True, True
        elif i == 2:  # CMYK JPEG masked image
            m_enc, convert_m = (lambda a: _jpeg(a, "CMYK")), True
        elif i == 3:  # RGBA photo
            f_bytes, convert_f = _png(un, "RGBA"), True
        elif i == 4:  # odd size: both 144x128, centre-cropped back to the face
            f_bytes, m_enc = _png(_pad_wide(un, 8)), (lambda a: _jpeg(_pad_wide(a, 8)))
            convert_f = convert_m = True
        elif i == 5:  # larger than the output (like the 1024² originals)
            f_bytes, m_enc = _png(_upscale(un, 256)), (lambda a: _jpeg(_upscale(a, 256)))
        if convert_f:
            ex.converted.add(ffhq.join(f_rel).uri)
        put(ffhq, f_rel, f_bytes)
        if i == 6:  # a 64² thumbnail of the same number elsewhere: a duplicate, the larger file wins
            ex.duplicate.add(put(ffhq, f"thumbnails/{ident}.png", _png(_upscale(un, 64))))
        for j, variant in enumerate(PLAN[i % 4]):
            name = f"{ident}{VARIANT_SUFFIX[variant]}.jpg"
            folder = f"{'CMFD' if variant == 'cmfd' else 'IMFD'}/{n // 1000 * 1000:05d}"
            m_rel = name if (i + j) % 2 == 0 else f"{folder}/{name}"
            uri = put(mfn, m_rel, m_enc(ma))
            if convert_m:
                ex.converted.add(uri)
            ex.counts[split][variant] = ex.counts[split].get(variant, 0) + 1
        good_jpeg = _jpeg(ma)
        if i == 7:  # truncated JPEG
            ex.bad.add(put(mfn, f"{ident}_Mask_Chin.jpg", good_jpeg[: len(good_jpeg) // 2]))
        elif i == 8:  # not an image at all
            ex.bad.add(put(mfn, f"IMFD/{ident}_Mask_Mouth_Chin.jpg", b"this is not a jpeg" * 20))
        elif i == 9:  # zero bytes
            ex.bad.add(put(mfn, f"{ident}_Mask_Nose_Mouth.jpg", b""))

    extra = [n for n in range(90000, 90100) if n not in numbers][:4]
    un, ma, _ = face()
    png = _png(un)
    ex.bad.add(put(ffhq, f"{extra[0]:05d}.png", png[: len(png) // 3]))  # truncated FFHQ photo
    ex.partner_bad.add(put(mfn, f"{extra[0]:05d}_Mask.jpg", _jpeg(ma)))
    ex.bad.add(put(ffhq, f"{extra[1]:05d}.png", b""))  # zero-byte FFHQ photo
    ex.partner_bad.add(put(mfn, f"{extra[1]:05d}_Mask.jpg", _jpeg(ma)))
    ex.unpaired.add(put(ffhq, f"{extra[2]:05d}.png", png))  # photo without a masked partner
    ex.unpaired.add(put(mfn, f"CMFD/{extra[3]:05d}_Mask.jpg", _jpeg(ma)))  # masked image without a photo
    ex.ignored.add(put(ffhq, "LICENSE.txt", b"CC BY-NC-SA 4.0\n"))
    ex.ignored.add(put(mfn, "README.md", b"MaskedFace-Net\n"))
    return ex


@pytest.fixture
def local_sources(tmp_path):
    ex = write_sources(str(tmp_path / "src"))
    return str(tmp_path / "src"), ex
