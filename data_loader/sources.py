"""Finding FFHQ + MaskedFace-Net pairs by listing only (no image is opened here).

FFHQ: `NNNNN.png`, flat or in thousand-folders (`00000/00012.png`), 1024² originals or 128² thumbnails.
MaskedFace-Net: `NNNNN_Mask.jpg` (CMFD, correctly masked) and `NNNNN_Mask_Mouth_Chin.jpg`, `NNNNN_Mask_Chin.jpg`,
`NNNNN_Mask_Nose_Mouth.jpg` (IMFD), flat or in folders. The number is the identity and the pairing key; it is
normalised to five digits ("12" and "00012" are the same person).

Every file below either root ends up in exactly one place: a pair, `skipped` (with a reason and a kind), or
`ignored` (a name that is neither dataset's, e.g. LICENSE.txt or the other dataset under a shared root).
Skip kinds: "bad" (the file itself is unusable; counts against --max-bad-fraction), "partner_bad" (fine, but
its partner is unusable), "unpaired" (its partner does not exist), "duplicate" (the same number twice: the
largest file, i.e. highest resolution, is kept).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from data_loader import storage

FFHQ_NAME = re.compile(r"^(\d{1,7})\.(png|jpe?g)$", re.IGNORECASE)
MFN_NAME = re.compile(r"^(\d{1,7})_Mask(|_Mouth_Chin|_Chin|_Nose_Mouth)\.(jpe?g|png)$", re.IGNORECASE)
VARIANTS = {"": "cmfd", "_mouth_chin": "imfd_mouth_chin", "_chin": "imfd_chin", "_nose_mouth": "imfd_nose_mouth"}
MAX_IGNORED_LISTED = 100  # unrecognised names are counted; only this many are listed in the manifest


@dataclass
class Identity:
    identity: str  # five-digit number
    ffhq: tuple[str, int]  # (relative path under the FFHQ root, bytes)
    masked: list[tuple[str, str, int]]  # (variant, relative path under the MaskedFace-Net root, bytes), sorted


@dataclass
class Discovery:
    identities: list[Identity]  # sorted by identity; each has an FFHQ image and at least one masked partner
    skipped: list[dict] = field(default_factory=list)  # {"path": uri, "reason": str, "kind": str}
    ignored: int = 0
    ignored_examples: list[str] = field(default_factory=list)
    files: dict = field(default_factory=dict)  # recognised image files per source


def identity_of(number: str) -> str:
    return f"{int(number):05d}"


LINK_REFUSED = "symbolic link pointing outside the input tree (refused)"


def discover(ffhq: storage.Location, mfn: storage.Location) -> Discovery:
    """List both roots and pair files by number."""
    d = Discovery(identities=[])

    def skip(loc: storage.Location, rel: str, reason: str, kind: str) -> None:
        d.skipped.append({"path": loc.join(rel).uri, "reason": reason, "kind": kind})

    def ignore(loc: storage.Location, rel: str) -> None:
        d.ignored += 1
        if len(d.ignored_examples) < MAX_IGNORED_LISTED:
            d.ignored_examples.append(loc.join(rel).uri)

    def keep_largest(table: dict, key, value: tuple, loc: storage.Location, rel: str, size: int) -> None:
        # value[-2:] is (rel, size) for both tables
        old = table.get(key)
        if old is None:
            table[key] = value
            return
        (keep, drop) = (value, old) if size > old[-1] else (old, value)
        table[key] = keep
        skip(loc, drop[-2], f"duplicate of {keep[-2]} (the larger file is kept)", "duplicate")

    ffhq_files: dict[str, tuple[str, int]] = {}
    bad_ffhq: dict[str, str] = {}  # identity -> relative path of an empty FFHQ file
    bad_masked: dict[str, str] = {}
    n_ffhq = 0
    escaped: list[str] = []  # symlinks that resolve outside the input tree: refused and listed
    for rel, size in storage.walk_files(ffhq, rejected=escaped):
        m = FFHQ_NAME.match(posixpath.basename(rel))
        if not m:
            ignore(ffhq, rel)
            continue
        n_ffhq += 1
        if size == 0:
            skip(ffhq, rel, "empty file (0 bytes)", "bad")
            bad_ffhq[identity_of(m.group(1))] = rel
            continue
        keep_largest(ffhq_files, identity_of(m.group(1)), (rel, size), ffhq, rel, size)

    masked: dict[tuple[str, str], tuple[str, str, int]] = {}
    n_mfn = 0
    for rel in escaped:
        skip(ffhq, rel, LINK_REFUSED, "bad")
    escaped = []
    for rel, size in storage.walk_files(mfn, rejected=escaped):
        m = MFN_NAME.match(posixpath.basename(rel))
        if not m:
            ignore(mfn, rel)
            continue
        n_mfn += 1
        ident, variant = identity_of(m.group(1)), VARIANTS[m.group(2).lower()]
        if size == 0:
            skip(mfn, rel, "empty file (0 bytes)", "bad")
            bad_masked[ident] = rel
            continue
        keep_largest(masked, (ident, variant), (variant, rel, size), mfn, rel, size)

    for rel in escaped:
        skip(mfn, rel, LINK_REFUSED, "bad")

    by_identity: dict[str, list[tuple[str, str, int]]] = {}
    for (ident, _variant), entry in sorted(masked.items()):
        by_identity.setdefault(ident, []).append(entry)
    for ident, entries in by_identity.items():
        if ident in ffhq_files:
            continue
        for _variant, rel, _size in entries:
            if ident in bad_ffhq:
                skip(mfn, rel, f"its FFHQ image {ffhq.join(bad_ffhq[ident]).uri} is unusable", "partner_bad")
            else:
                skip(mfn, rel, f"no FFHQ image {ident}.png under {ffhq.uri}", "unpaired")
    for ident in sorted(ffhq_files):
        if ident not in by_identity:
            rel = ffhq_files[ident][0]
            if ident in bad_masked:
                bad_uri = mfn.join(bad_masked[ident]).uri
                skip(ffhq, rel, f"its MaskedFace-Net image {bad_uri} is unusable", "partner_bad")
            else:
                skip(ffhq, rel, f"no MaskedFace-Net image {ident}_Mask*.jpg under {mfn.uri}", "unpaired")
            continue
        d.identities.append(Identity(ident, ffhq_files[ident], by_identity[ident]))
    d.skipped.sort(key=lambda s: s["path"])
    d.files = {"ffhq": n_ffhq, "maskedfacenet": n_mfn}
    return d
