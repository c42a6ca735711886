"""The one shard schema and its manifest.

A prepared dataset is a folder (local or s3://) holding:

    manifest.json            counts, shard list with sha256, skipped inputs, image size
    gallery/part-*.parquet   one unmasked photo per identity, ALL identities: what identification searches
    train/ val/ test/        probe pairs (masked, unmasked, alpha label) of identity-disjoint splits
    adapt/                   optional extra photos (synthetic data only) for `maskgan recognizer adapt`

Every set has the same columns. Images are raw uint8 arrays (H*W*3, alpha H*W) rather than PNG/JPEG, so a
training stream decodes with a memcpy instead of an image codec (one CPU core decodes ~1.4k 128² PNGs/s,
far below what one GPU consumes).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_loader import storage
from data_loader.storage import Location

FORMAT = "maskgan-shards/1"
MANIFEST = "manifest.json"
SETS = ("gallery", "train", "val", "test", "adapt")
SPLITS = ("train", "val", "test")

SCHEMA = pa.schema(
    [
        ("label", pa.int32()),  # index of the identity in the gallery: the class the recogniser predicts
        ("identity", pa.string()),  # identity as the source names it (FFHQ number, synthetic id)
        ("split", pa.string()),  # train / val / test, identity-disjoint
        ("variant", pa.string()),  # synthetic, cmfd, imfd_mouth_chin, ..., or gallery
        ("size", pa.int16()),  # images are size x size
        ("unmasked", pa.binary()),  # uint8 size*size*3
        ("masked", pa.binary()),  # uint8 size*size*3; empty in the gallery
        ("alpha", pa.binary()),  # uint8 size*size, 255 = mask; empty in the gallery
        # float32 [68, 2] (x, y) pixels of dlib's iBUG 68-point layout in the unmasked photo (the masked photo is
        # pixel-aligned with it, so the same points serve both); empty bytes when unknown. Shards written before
        # this column existed read as "unknown" (with_landmarks adds it empty).
        ("landmarks", pa.binary()),
    ]
)
LANDMARKS_SHAPE = (68, 2)
_LANDMARK_BYTES = 68 * 2 * 4


class ShardError(RuntimeError):
    user_error = True


def split_of(identity: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """Stable identity-disjoint split: a hash of the identity, so re-running gives the same split."""
    h = int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    return "val" if h < fractions[0] + fractions[1] else "test"


@dataclass
class ShardWriter:
    """Buffers rows of one set and writes numbered parquet shards; a shard that exists is kept (re-runs resume)."""

    root: Location
    set_name: str
    shard_size: int = 512
    start_index: int = 0
    shards: list[dict] = field(default_factory=list)
    _rows: list[dict] = field(default_factory=list)
    _index: int = 0

    def __post_init__(self):
        self._index = self.start_index

    def add(self, **row) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rel = f"{self.set_name}/part-{self._index:05d}.parquet"
        self.shards.append(write_shard(self.root, rel, self._rows))
        self._rows = []
        self._index += 1

    def close(self) -> list[dict]:
        self.flush()
        return self.shards


def write_shard(root: Location, rel: str, rows: list[dict]) -> dict:
    """Write rows (image_row dicts) as one parquet shard at root/rel; returns its manifest entry (with sha256)."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=max(1, min(256, len(rows))))
    data = buf.getvalue()
    storage.write_bytes(root.join(rel), data)
    return {"path": rel, "rows": len(rows), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def shard_ok(root: Location, shard: dict) -> bool:
    """True when the shard exists and its bytes match the manifest entry's sha256 (re-runs skip such shards)."""
    loc = root.join(shard["path"])
    if not storage.exists(loc):
        return False
    return hashlib.sha256(storage.read_bytes(loc)).hexdigest() == shard["sha256"]


def image_row(*, label: int, identity: str, split: str, variant: str, unmasked: np.ndarray,
              masked: np.ndarray | None = None, alpha: np.ndarray | None = None,
              landmarks: np.ndarray | None = None) -> dict:
    s = unmasked.shape[0]
    assert unmasked.shape == (s, s, 3) and unmasked.dtype == np.uint8
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float32)
        assert landmarks.shape == LANDMARKS_SHAPE and np.isfinite(landmarks).all(), landmarks.shape
    return {
        "label": int(label),
        "identity": identity,
        "split": split,
        "variant": variant,
        "size": s,
        "unmasked": unmasked.tobytes(),
        "masked": b"" if masked is None else masked.astype(np.uint8).tobytes(),
        "alpha": b"" if alpha is None else alpha.astype(np.uint8).tobytes(),
        "landmarks": b"" if landmarks is None else landmarks.astype("<f4").tobytes(),
    }


def landmarks_of(row: dict) -> np.ndarray | None:
    """A row's 68 landmarks, float32 [68, 2] (x, y) pixels of its unmasked photo, or None when unknown.

    Takes a raw row (`landmarks` as bytes, as pyarrow's to_pylist gives; absent or empty: unknown) or a row of
    a decoded batch (`landmarks` [68, 2], NaN when unknown)."""
    value = row.get("landmarks")
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.dtype != object and value.dtype.kind == "f":
        pts = value.astype(np.float32)
    else:
        raw = bytes(value)
        if not raw:
            return None
        if len(raw) != _LANDMARK_BYTES:
            raise ShardError(f"landmarks: expected {_LANDMARK_BYTES} bytes (float32 [68, 2]) or none, got {len(raw)}")
        pts = np.frombuffer(raw, dtype="<f4").reshape(LANDMARKS_SHAPE).astype(np.float32)
    if pts.shape != LANDMARKS_SHAPE:
        raise ShardError(f"landmarks: expected shape {LANDMARKS_SHAPE}, got {pts.shape}")
    return None if np.isnan(pts).any() else pts


def with_landmarks(table: pa.Table) -> pa.Table:
    """The table with a `landmarks` column: shards written before the column existed get it empty (unknown)."""
    if "landmarks" in table.column_names:
        return table
    return table.append_column(SCHEMA.field("landmarks"), pa.array([b""] * table.num_rows, pa.binary()))


def write_manifest(root: Location, manifest: dict) -> None:
    """Publish a dataset: written last, after every shard it lists (see unpublish)."""
    manifest = {"format": FORMAT, **manifest}
    storage.write_text(root.join(MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))


def unpublish(root: Location) -> None:
    """Remove root's manifest before a writer touches any shard, so an interrupted rewrite leaves a folder that
    says it is incomplete (no manifest) rather than an old manifest over new shards (a checksum mismatch that
    hides the cause). Writers publish with write_manifest last. True on a local folder and on S3 alike: it
    needs no atomic rename, only that a delete and a write are seen by the next reader."""
    storage.delete_file(root.join(MANIFEST))


def read_manifest(root: Location) -> dict:
    """The dataset's manifest, checked for the shape every reader relies on; else one line naming its URI."""
    loc = root.join(MANIFEST)
    if not storage.exists(loc):
        raise ShardError(f"{root.uri}: no {MANIFEST} (not a dataset, or an incomplete or interrupted write?); "
                         f"create data with `maskgan data synth` or `maskgan data prepare`")
    raw = storage.read_bytes(loc)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ShardError(f"{loc.uri}: not a manifest (not UTF-8 text: byte {e.start} is "
                         f"0x{raw[e.start]:02x})") from None
    except json.JSONDecodeError as e:
        raise ShardError(f"{loc.uri}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise ShardError(f"{loc.uri}: not a {FORMAT} manifest ({problem})")
    return manifest


def _manifest_problem(m) -> str | None:
    """What is wrong with a parsed manifest's shape, or None: what readers index must be there, with its type."""
    def count(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not isinstance(m, dict):
        return f"expected a JSON object, got {type(m).__name__}"
    if m.get("format") != FORMAT:
        return f"format {m.get('format')!r}, expected {FORMAT!r}"
    if not count(m.get("size")) or m["size"] == 0:
        return f"size: expected a positive integer, got {m.get('size')!r}"
    sets = m.get("sets")
    if not isinstance(sets, dict):
        return f"sets: expected an object of sets, got {type(sets).__name__}"
    for name, entry in sets.items():
        if name not in SETS:
            return f"sets.{name}: unknown set (allowed: {', '.join(SETS)})"
        if not isinstance(entry, dict) or not count(entry.get("rows")) or not isinstance(entry.get("shards"), list):
            return f"sets.{name}: expected {{rows: integer >= 0, shards: [...]}}"
        for i, shard in enumerate(entry["shards"]):
            ok = (isinstance(shard, dict) and isinstance(shard.get("path"), str) and shard["path"]
                  and count(shard.get("rows")) and isinstance(shard.get("sha256"), str)
                  and len(shard["sha256"]) == 64 and count(shard.get("bytes", 0)))
            if not ok:
                return f"sets.{name}.shards[{i}]: expected {{path, rows, sha256, bytes}}, got {shard!r:.80}"
    return None


def set_shards(root: Location, manifest: dict, set_name: str) -> list[dict]:
    entry = manifest.get("sets", {}).get(set_name)
    if entry is None:
        raise ShardError(f"{root.uri}: dataset has no {set_name!r} set (has: {', '.join(manifest.get('sets', {}))})")
    return entry["shards"]


def read_table(root: Location, shard: dict, verify: bool = True) -> pa.Table:
    loc = root.join(shard["path"])
    data = storage.read_bytes(loc)
    if verify and hashlib.sha256(data).hexdigest() != shard["sha256"]:
        raise ShardError(f"{loc.uri}: checksum mismatch (file is corrupt or was changed after prepare)")
    return with_landmarks(parse_parquet(data))


def parse_parquet(data: bytes, columns: Iterable[str] | None = None) -> pa.Table:
    """A shard's bytes as a table (only those of `columns` it has, when given), read wholly on the calling thread.

    Why one thread: Arrow's reader works on a Python-held buffer from its own threads and drops its references
    there, possibly after the read has returned. When the process was exiting by then (a refusal a moment after
    reading a shard), the drop took the GIL during interpreter finalization and aborted the process ("terminate
    called without an active exception"): `maskgan train` refused bad weights and exited -6 rather than 2, about
    1 run in 4 on a loaded machine. Upstream: apache/arrow#34314 (open); the guard of apache/arrow#49943 (in pyarrow
    26) does not cover a drop during finalization. Revisit when that issue closes. These are small in-memory files,
    so threads and pre-buffering gained nothing here."""
    parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    present = None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
    return parquet.read(columns=present, use_threads=False)


def iter_set(root: Location, set_name: str, columns: Iterable[str] | None = None) -> Iterator[dict]:
    """Decoded numpy batches of one set, one shard at a time (memory bounded by the shard size)."""
    manifest = read_manifest(root)
    for shard in set_shards(root, manifest, set_name):
        table = read_table(root, shard)
        if columns is not None:
            table = table.select(list(columns))
        yield decode(table.to_pydict())


def iter_first(root: Location, set_name: str, limit: int | None, columns: Iterable[str] | None = None) -> Iterator[dict]:
    """iter_set's batches, cut to the set's first `limit` rows (None: every row)."""
    seen = 0
    for batch in iter_set(root, set_name, columns):
        if limit is not None:
            batch = {k: v[: limit - seen] for k, v in batch.items()}
            if not batch or len(next(iter(batch.values()))) == 0:
                return
        yield batch
        seen += len(next(iter(batch.values())))
        if limit is not None and seen >= limit:
            return


def load_set(root: Location, set_name: str) -> dict:
    """A whole set as numpy arrays. For small sets only (evaluation, gallery, tests)."""
    parts = list(iter_set(root, set_name))
    if not parts:
        raise ShardError(f"{root.uri}: set {set_name!r} is empty")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def decode(batch: dict) -> dict:
    """Raw-bytes columns -> uint8 arrays: unmasked/masked [B,S,S,3], alpha [B,S,S]; landmarks float32
    [B,68,2] (NaN rows where unknown; the key is absent when no row knows them); other columns as arrays.

    Takes lists or numpy object arrays (Ray Data batches), so the same function serves every reader.
    """
    out: dict = {}
    sizes = np.asarray(batch["size"]).astype(np.int64) if "size" in batch else None
    for key, value in batch.items():
        if key in ("unmasked", "masked", "alpha"):
            items = list(value)
            if not items or all(len(b) == 0 for b in items):
                continue
            s = int(sizes[0])
            shape = (s, s, 3) if key != "alpha" else (s, s)
            out[key] = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(shape) for b in items])
        elif key == "landmarks":
            pts = [landmarks_of({"landmarks": b}) for b in value]
            if any(p is not None for p in pts):
                unknown = np.full(LANDMARKS_SHAPE, np.nan, np.float32)
                out[key] = np.stack([unknown if p is None else p for p in pts])
        else:
            out[key] = np.asarray(value)
    return out
