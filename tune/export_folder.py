"""An export folder's names and its integrity: SHA256SUMS, the one verifier of its objects, and reading a
finished export back (`maskgan sample` and `maskgan print` start here; a new export of the same checkpoint takes its
report.json from here). The layout is in tune/export.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from data_loader import storage

CARD = "model_card.json"
SUMS = "SHA256SUMS"
FORMAT = "maskgan-export/1"
STATE = "checkpoint/state.pt"
META = "checkpoint/meta.json"


class ExportError(RuntimeError):
    user_error = True


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sums_text(files: dict[str, bytes]) -> str:
    return "".join(f"{sha256(data)}  {name}\n" for name, data in sorted(files.items()))


def parse_sums(text: str, where: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ExportError(f"{where}: malformed line {line[:80]!r}")
        out[name] = digest
    return out


def same_bytes(obj: storage.Location, data: bytes) -> bool:
    info = storage.stat(obj)
    if info is None or info.size != len(data):
        return False
    want = sha256(data)
    if info.sha256 is not None and info.sha256 != want:
        return False
    return sha256(storage.read_bytes(obj)) == want  # recorded checksums are claims; the bytes decide


def verify_objects(folder: storage.Location, digests: dict[str, str], sizes: dict[str, int] | None = None) -> None:
    """The one check of an export's objects (after upload, before sampling): each present, of the right size,
    with the right sha256, read back in full. Errors name the object."""
    for name, want in sorted(digests.items()):
        obj = folder.join(name)
        info = storage.stat(obj)
        if info is None:
            raise ExportError(f"{obj.uri}: missing")
        if sizes is not None and info.size != sizes[name]:
            raise ExportError(f"{obj.uri}: size {info.size} after upload, expected {sizes[name]}")
        got = sha256(storage.read_bytes(obj))
        if got != want:
            raise ExportError(f"{obj.uri}: checksum mismatch (expected {want[:16]}…, got {got[:16]}…): "
                              "the object is corrupted; export again")


def read_sums(folder: storage.Location) -> dict[str, str]:
    loc = folder.join(SUMS)
    if not storage.exists(loc):
        raise ExportError(f"{loc.uri}: missing")
    return parse_sums(storage.read_text(loc), loc.uri)


def read_card(folder: storage.Location) -> dict | None:
    """The model card, or None when there is none or it is not a JSON object."""
    loc = folder.join(CARD)
    if not storage.exists(loc):
        return None
    try:
        card = json.loads(storage.read_bytes(loc))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return card if isinstance(card, dict) else None


def verify_export(uri: str) -> dict:
    """Check a finished export against its SHA256SUMS; returns the model card. Errors name the object."""
    loc = storage.resolve(uri)
    if not storage.exists(loc.join(CARD)):
        if storage.exists(loc.join(SUMS)) or storage.exists(loc.join(STATE)):
            raise ExportError(f"{loc.uri}: unfinished export (no {CARD}); run `maskgan export` again")
        raise ExportError(f"{loc.uri}: not an export (no {CARD})")
    sums = read_sums(loc)
    verify_objects(loc, sums)
    card = read_card(loc)
    if card is None:
        raise ExportError(f"{loc.join(CARD).uri}: not JSON")
    if card.get("format") != FORMAT:
        raise ExportError(f"{loc.join(CARD).uri}: not a maskgan export card")
    missing = set(card.get("files", {})) - set(sums)
    if missing:
        raise ExportError(f"{loc.join(SUMS).uri}: does not cover {sorted(missing)[0]}")
    return card


@dataclass
class Inputs:
    """What an evaluation of a checkpoint depends on besides its state: the data's manifest, the recogniser's and
    the projector's weights (sha256; None where out of reach or named, not a file), and the code."""

    manifest_sha256: str | None
    recognizer_sha256: str | None
    projector_sha256: str | None
    code: str


def exported_report(dest: storage.Location, checkpoint_uri: str, state_sha256: str, inputs: Inputs) -> bytes | None:
    """report.json's bytes from a finished export of this very checkpoint at `dest`, when its model card says the
    same committed code evaluated it on the same data and weights and the object verifies against the card: then
    exporting again (nothing to upload, or one corrupted object to repair) does not evaluate again. None
    otherwise; a working tree with uncommitted changes ("-dirty") never reuses one."""
    card = read_card(dest)
    if card is None or card.get("format") != FORMAT or inputs.code.endswith("-dirty"):
        return None
    source = card.get("source") or {}
    same = (source.get("checkpoint") == checkpoint_uri
            and source.get("state_sha256") == state_sha256
            and (card.get("code_version") or {}).get("export") == inputs.code
            and (card.get("data") or {}).get("manifest_sha256") == inputs.manifest_sha256
            and (card.get("recognizer") or {}).get("sha256") == inputs.recognizer_sha256
            and (card.get("projector") or {}).get("sha256") == inputs.projector_sha256)
    if not same or not source.get("report_sha256"):
        return None
    try:
        raw = storage.read_bytes(dest.join("report.json"))
    except storage.StorageError:
        return None
    return raw if sha256(raw) == source["report_sha256"] else None
