"""The resumable chunk stages both `maskgan data prepare` paths run: FFHQ + MaskedFace-Net (data_loader.prepare)
and identity folders (data_loader.identities).

A stage is a function `fn(spec, src, root) -> marker entry` run once per chunk spec as a Ray Data task. Each
finished chunk leaves a marker (`_prepare/<stage>/<chunk>.json`) holding the hash of its spec and its shards'
sha256, so a re-run skips every chunk whose marker matches and whose shards verify. What the stages skipped
or converted is tallied on the driver, the finished shards are gathered into the manifest's sets, and the
manifest is published last, only when the unusable inputs stay within --max-bad-fraction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from data_loader import shards, storage

WORK = "_prepare"
VERSION = 1  # bump when the per-chunk processing changes, so re-runs redo chunks


class PrepareError(RuntimeError):
    user_error = True  # the CLI prints it as one line


# ---- one chunk: its spec's hash and its resume marker -----------------------------------------------------


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps({"v": VERSION, **spec}, sort_keys=True).encode()).hexdigest()


def resumed(root: storage.Location, marker: storage.Location, spec_hash: str, keys: tuple[str, ...]) -> dict | None:
    """The marker's entry when it matches this spec and every shard it names verifies; else None."""
    if not storage.exists(marker):
        return None
    try:
        entry = json.loads(storage.read_text(marker))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if entry.get("spec_hash") != spec_hash:
        return None
    for key in keys:
        if entry.get(key) is not None and not shards.shard_ok(root, entry[key]):
            return None
    return {**entry, "resumed": True}


# ---- running a stage over every chunk ---------------------------------------------------------------------


def _stage_batch(batch: dict, fn, src: storage.Location, root: storage.Location) -> dict:
    return {"entry": np.array([json.dumps(fn(json.loads(str(s)), src, root)) for s in batch["spec"]], dtype=object)}


def run_stage(fn, specs: list[dict], src: storage.Location, root: storage.Location, what: str, log) -> list[dict]:
    """fn(spec, src, root) -> marker entry, once per spec as a Ray Data task (one chunk per block), in chunk order."""
    import ray.data

    if not specs:
        return []
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"spec": json.dumps(s)} for s in specs], override_num_blocks=len(specs))
    ds = ds.map_batches(_stage_batch, batch_size=1, batch_format="numpy", num_cpus=1,
                        fn_kwargs={"fn": fn, "src": src, "root": root})
    entries, resumed, every = [], 0, max(1, len(specs) // 20)
    for row in ds.iter_rows():
        entry = json.loads(row["entry"])
        entries.append(entry)
        resumed += bool(entry.get("resumed"))
        if len(entries) % every == 0 or len(entries) == len(specs):
            log(f"prepare: {what}: {len(entries)}/{len(specs)} chunks done"
                + (f" ({resumed} already finished, skipped)" if resumed else ""))
    return sorted(entries, key=lambda e: e["chunk"])


# ---- the driver's summary of what the stages did ----------------------------------------------------------


@dataclass
class Tally:
    """Input files that were skipped (each {"path", "reason", "kind"}) or converted (each {"path",
    "converted"}), gathered from listing and from every stage's entries: the manifest lists both."""

    skipped: list[dict] = field(default_factory=list)
    converted: list[dict] = field(default_factory=list)

    def add(self, entry: dict) -> None:
        """A stage entry's own skipped and converted files."""
        self.skipped += entry["skipped"]
        self.converted += entry["converted"]

    def sort(self) -> None:
        """By path, so the manifest does not depend on the order in which chunks finished."""
        self.skipped.sort(key=lambda s: s["path"])
        self.converted.sort(key=lambda c: c["path"])

    def bad(self) -> int:
        """Files unusable in themselves (kind "bad"): the only ones --max-bad-fraction counts."""
        return sum(s["kind"] == "bad" for s in self.skipped)

    def summary(self) -> str:
        """`skipped N (kind n, ...), converted M`, for the driver's last log line."""
        kinds: dict[str, int] = {}
        for s in self.skipped:
            kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
        return (f"skipped {len(self.skipped)}"
                + (f" ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})" if kinds else "")
                + f", converted {len(self.converted)}")


def gather_sets(entries: list[dict]) -> dict:
    """The manifest's `sets` from the writing stage's entries: each chunk's gallery shard and its probe shard
    (under its split), with their rows, shards sorted by path."""
    sets = {name: {"rows": 0, "shards": []} for name in ("gallery", *shards.SPLITS)}
    for e in entries:
        for set_name, shard in (("gallery", e["gallery"]), (e["split"], e["probes"])):
            if shard:
                sets[set_name]["shards"].append(shard)
                sets[set_name]["rows"] += shard["rows"]
    for s in sets.values():
        s["shards"].sort(key=lambda x: x["path"])
    return sets


def split_identities(labels: dict[str, int]) -> dict[str, int]:
    """Identities per split (splits are by the stable hash of the identity)."""
    return {split: sum(shards.split_of(i) == split for i in labels) for split in shards.SPLITS}


def summary_line(split_ids: dict[str, int], sets: dict, probes: str, tally: Tally, seconds: float,
                 extra: str = "") -> str:
    """The driver's last line before publishing: identities and probe rows per split, then what was skipped."""
    return (f"prepare: {sum(split_ids.values())} identities (train {split_ids['train']} / val {split_ids['val']} / "
            f"test {split_ids['test']}), {probes} train {sets['train']['rows']} / val {sets['val']['rows']} / test "
            f"{sets['test']['rows']}{extra}; {tally.summary()}; {seconds:.1f}s")


def publish(root: storage.Location, manifest: dict, n_inputs: int, log) -> None:
    """Write `_prepare/report.json`, then the manifest unless the bad files exceed --max-bad-fraction (then one
    line naming the report; finished chunks stay, so a re-run resumes)."""
    report = root.join(WORK, "report.json")
    storage.write_text(report, json.dumps(manifest, indent=1, sort_keys=True))
    n_bad, max_bad_fraction = manifest["bad"]["count"], manifest["bad"]["max_fraction"]
    if n_bad > max_bad_fraction * n_inputs:  # not published: the old manifest was removed before any write
        raise PrepareError(
            f"{n_bad} of {n_inputs} input images ({n_bad / n_inputs:.1%}) are unusable, above --max-bad-fraction "
            f"{max_bad_fraction:.1%}; no manifest written. Every skipped file and why: {report.uri} "
            f"(finished shards are kept: a re-run resumes)")
    shards.write_manifest(root, manifest)
    log(f"prepare: manifest written to {root.join(shards.MANIFEST).uri}")
