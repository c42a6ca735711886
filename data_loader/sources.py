"""Listing the inputs of `maskgan data prepare` (no image is opened here): FFHQ + MaskedFace-Net pairs, and
identity folders.

FFHQ: `NNNNN.png`, flat or in thousand-folders (`00000/00012.png`), 1024² originals or 128² thumbnails.
MaskedFace-Net: `NNNNN_Mask.jpg` (CMFD, correctly masked) and `NNNNN_Mask_Mouth_Chin.jpg`, `NNNNN_Mask_Chin.jpg`,
`NNNNN_Mask_Nose_Mouth.jpg` (IMFD), flat or in folders. The number is the identity and the pairing key; it is
normalised to five digits ("12" and "00012" are the same person).

Every file below either root ends up in exactly one place: a pair, `skipped` (with a reason and a kind), or
`ignored` (a name that is neither dataset's, e.g. LICENSE.txt or the other dataset under a shared root).
Skip kinds: "bad" (the file itself is unusable; counts against --max-bad-fraction), "partner_bad" (fine, but
its partner is unusable), "unpaired" (its partner does not exist), "duplicate" (the same number twice: the
largest file, i.e. highest resolution, is kept).

Identity folders (LFW, CASIA-WebFace, VGGFace2, CelebA by identity): `<root>/<identity>/<photo>.{jpg,jpeg,png}`,
each with an optional `<photo>.json` sidecar (face box and landmarks); anything else is ignored. A folder with
fewer photo files than the minimum is skipped with kind "too_few_photos".
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
PHOTO = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)  # an identity folder's photos


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
    faces = _list_root(d, ffhq, FFHQ_NAME, _ffhq_entry)
    masked = _list_root(d, mfn, MFN_NAME, _masked_entry)
    _pair(d, ffhq, mfn, faces, masked)
    d.skipped.sort(key=lambda s: s["path"])
    d.files = {"ffhq": faces.files, "maskedfacenet": masked.files}
    return d


def _skip(d: Discovery, loc: storage.Location, rel: str, reason: str, kind: str) -> None:
    d.skipped.append({"path": loc.join(rel).uri, "reason": reason, "kind": kind})


def _ignore(d: Discovery | Found, loc: storage.Location, rel: str) -> None:
    """Count a name that is neither dataset's; list the first MAX_IGNORED_LISTED of them."""
    d.ignored += 1
    if len(d.ignored_examples) < MAX_IGNORED_LISTED:
        d.ignored_examples.append(loc.join(rel).uri)


@dataclass
class _Listing:
    """One dataset's recognised files under its root."""

    kept: dict  # pairing key -> entry ending in (relative path, bytes): the largest file of each key
    empty: dict[str, str] = field(default_factory=dict)  # identity -> relative path of an empty file
    files: int = 0  # files with this dataset's names, empty ones and duplicates included


def _list_root(d: Discovery, root: storage.Location, name: re.Pattern, key_and_entry) -> _Listing:
    """Walk one dataset's root: names it does not use are ignored, empty files and symlinks out of the tree
    are skipped as bad, and of two files with the same key the larger is kept (the other listed as a
    duplicate). `key_and_entry(name match, identity, rel, size)` -> (pairing key, entry)."""
    listing = _Listing(kept={})
    escaped: list[str] = []  # symlinks that resolve outside the input tree: refused and listed
    for rel, size in storage.walk_files(root, rejected=escaped):
        m = name.match(posixpath.basename(rel))
        if not m:
            _ignore(d, root, rel)
            continue
        listing.files += 1
        ident = identity_of(m.group(1))
        if size == 0:
            _skip(d, root, rel, "empty file (0 bytes)", "bad")
            listing.empty[ident] = rel
            continue
        _keep_largest(d, listing.kept, *key_and_entry(m, ident, rel, size), root)
    for rel in escaped:
        _skip(d, root, rel, LINK_REFUSED, "bad")
    return listing


def _ffhq_entry(_m: re.Match, ident: str, rel: str, size: int) -> tuple:
    return ident, (rel, size)


def _masked_entry(m: re.Match, ident: str, rel: str, size: int) -> tuple:
    variant = VARIANTS[m.group(2).lower()]  # one partner per identity and variant
    return (ident, variant), (variant, rel, size)


def _keep_largest(d: Discovery, table: dict, key, entry: tuple, loc: storage.Location) -> None:
    """The larger file of the same key is kept (the higher resolution); the other is listed as a duplicate."""
    old = table.get(key)
    if old is None:
        table[key] = entry
        return
    (keep, drop) = (entry, old) if entry[-1] > old[-1] else (old, entry)
    table[key] = keep
    _skip(d, loc, drop[-2], f"duplicate of {keep[-2]} (the larger file is kept)", "duplicate")


def _pair(d: Discovery, ffhq: storage.Location, mfn: storage.Location, faces: _Listing, masked: _Listing) -> None:
    """Identities with an FFHQ image and at least one masked partner; every file without a partner is listed,
    as "partner_bad" when its partner exists but is empty, else as "unpaired"."""
    by_identity: dict[str, list[tuple[str, str, int]]] = {}
    for (ident, _variant), entry in sorted(masked.kept.items()):
        by_identity.setdefault(ident, []).append(entry)
    for ident, entries in by_identity.items():
        if ident in faces.kept:
            continue
        for _variant, rel, _size in entries:
            if ident in faces.empty:
                _skip(d, mfn, rel, f"its FFHQ image {ffhq.join(faces.empty[ident]).uri} is unusable", "partner_bad")
            else:
                _skip(d, mfn, rel, f"no FFHQ image {ident}.png under {ffhq.uri}", "unpaired")
    for ident in sorted(faces.kept):
        if ident not in by_identity:
            rel = faces.kept[ident][0]
            if ident in masked.empty:
                bad_uri = mfn.join(masked.empty[ident]).uri
                _skip(d, ffhq, rel, f"its MaskedFace-Net image {bad_uri} is unusable", "partner_bad")
            else:
                _skip(d, ffhq, rel, f"no MaskedFace-Net image {ident}_Mask*.jpg under {mfn.uri}", "unpaired")
            continue
        d.identities.append(Identity(ident, faces.kept[ident], by_identity[ident]))


# ---- identity folders ------------------------------------------------------------------------------------


@dataclass
class Folder:
    identity: str
    photos: list[tuple[str, int, bool]]  # (relative path, bytes, has a sidecar), sorted by name


@dataclass
class Found:
    folders: list[Folder]
    max_photos: int  # what the listing was asked for: --max-photos-per-identity
    min_photos: int  # and --min-photos-per-identity
    skipped: list[dict] = field(default_factory=list)
    photos: int = 0  # photo files seen (before the cap)
    sidecars: int = 0
    capped: int = 0  # photos beyond --max-photos-per-identity, not read
    ignored: int = 0
    ignored_examples: list[str] = field(default_factory=list)


def discover_identity_folders(root: storage.Location, max_photos: int, min_photos: int) -> Found:
    """List `<root>/<identity>/<photo>`; folders with fewer photo files than min_photos are skipped here."""
    found = Found(folders=[], max_photos=max_photos, min_photos=min_photos)
    escaped: list[str] = []
    photos: dict[str, list[tuple[str, int]]] = {}
    sidecars: set[str] = set()
    for rel, size in storage.walk_files(root, rejected=escaped):
        parts = rel.split("/")
        if len(parts) == 2 and PHOTO.search(parts[1]):
            found.photos += 1
            if size == 0:
                found.skipped.append({"path": root.join(rel).uri, "reason": "empty file (0 bytes)", "kind": "bad"})
            else:
                photos.setdefault(parts[0], []).append((rel, size))
        elif len(parts) == 2 and parts[1].lower().endswith(".json"):
            sidecars.add(rel[:-5])
        else:
            _ignore(found, root, rel)
    for rel in escaped:
        found.skipped.append({"path": root.join(rel).uri, "reason": LINK_REFUSED, "kind": "bad"})
    for ident in sorted(photos):
        files = sorted(photos[ident])
        found.capped += max(0, len(files) - max_photos)
        files = files[:max_photos]
        if len(files) < min_photos:
            found.skipped.append(too_few_photos(root, ident, len(files), min_photos, "photo file"))
            continue
        with_sidecar = [(rel, size, PHOTO.sub("", rel) in sidecars) for rel, size in files]
        found.sidecars += sum(s for _r, _b, s in with_sidecar)
        found.folders.append(Folder(ident, with_sidecar))
    return found


def too_few_photos(root: storage.Location, ident: str, n: int, need: int, what: str) -> dict:
    """The skipped entry of an identity with fewer usable photos than it needs."""
    return {"path": root.join(ident).uri, "kind": "too_few_photos",
            "reason": f"{n} usable {what}{'s' if n != 1 else ''}, need at least {need} (one gallery photo and "
                      f"probes of other photos)"}
