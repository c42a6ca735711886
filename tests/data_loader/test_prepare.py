"""`maskgan data prepare` over a fake FFHQ + MaskedFace-Net tree: in a bucket on moto's S3 server, and locally.

What a user notices: the counts per split and variant, exactly the bad files listed with reasons, labels that
line up with the gallery, alpha labels that match the truth, a one-line failure above --max-bad-fraction, a
re-run that skips finished shards, and training that runs straight from the bucket.
"""

import json
import os
import re

import numpy as np
import pytest
from conftest import SIZE, write_sources

import cli.main as cli
from data_loader import prepare, shards, storage

BUCKET = "t-prepare-from-bucket"


def _kinds(manifest: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in manifest["skipped"]:
        out.setdefault(s["kind"], set()).add(s["path"])
    return out


@pytest.fixture(scope="module")
def bucket_data(s3_server, ray_session):
    storage.boto3_client().create_bucket(Bucket=BUCKET)
    ex = write_sources(f"s3://{BUCKET}/src")
    logs: list[str] = []
    manifest = prepare.run(f"s3://{BUCKET}/src/ffhq", f"s3://{BUCKET}/src/mfn", f"s3://{BUCKET}/prepared",
                           size=SIZE, shard_size=8, max_bad_fraction=0.2, log=logs.append)
    return ex, manifest, logs


def test_prepare_from_bucket_counts_lists_bad_files_and_labels(bucket_data):
    ex, manifest, logs = bucket_data
    root = storage.resolve(f"s3://{BUCKET}/prepared")
    assert shards.read_manifest(root) == manifest  # written, and what run() returned
    assert manifest["identities"] == 12 and manifest["size"] == SIZE
    assert manifest["split_identities"] == {"train": 8, "val": 2, "test": 2}
    assert manifest["counts"] == ex.counts
    for split in shards.SPLITS:
        assert manifest["sets"][split]["rows"] == sum(ex.counts[split].values())
    kinds = _kinds(manifest)
    assert kinds == {"bad": ex.bad, "partner_bad": ex.partner_bad, "unpaired": ex.unpaired,
                     "duplicate": ex.duplicate}
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert any("truncated" in reasons[p] for p in ex.bad) and any("0 bytes" in reasons[p] for p in ex.bad)
    assert {c["path"] for c in manifest["converted"]} == ex.converted
    assert manifest["inputs"]["ffhq"] + manifest["inputs"]["maskedfacenet"] == ex.inputs
    assert manifest["inputs"]["ignored"] == 2 and set(manifest["inputs"]["ignored_examples"]) == ex.ignored
    assert manifest["bad"]["count"] == 5 and manifest["bad"]["fraction"] == pytest.approx(5 / ex.inputs)
    assert any(line.startswith("prepare: found") for line in logs) and "manifest written" in logs[-1]

    # the gallery: one photo per identity, labels 0..N-1 by sorted identity, every split
    gallery = shards.load_set(root, "gallery")  # load_set verifies every shard's sha256
    order = np.argsort(gallery["label"])
    assert list(gallery["label"][order]) == list(range(12))
    assert list(gallery["identity"][order]) == ex.identities
    label_of = dict(zip(gallery["identity"], gallery["label"]))
    ious = []
    for split in shards.SPLITS:
        probes = shards.load_set(root, split)
        assert probes["masked"].shape[1:] == (SIZE, SIZE, 3) and probes["alpha"].shape[1:] == (SIZE, SIZE)
        assert "landmarks" not in probes  # FFHQ + MaskedFace-Net records none: unknown, not made up
        for ident, label, row_split, a in zip(probes["identity"], probes["label"], probes["split"], probes["alpha"]):
            assert label == label_of[ident] and row_split == split == shards.split_of(ident)
            truth = ex.alpha[ident]
            ious.append(float(((a > 127) & truth).sum() / ((a > 127) | truth).sum()))
    assert len(ious) == sum(sum(c.values()) for c in ex.counts.values())
    assert np.mean(ious) >= 0.9 and min(ious) >= 0.8


@pytest.mark.slow
def test_training_runs_from_the_bucket(bucket_data, s3_server, tmp_path):
    from maskgan import config
    from maskgan.run import checkpoints
    from maskgan.training import pretrain, train

    data = f"s3://{BUCKET}/prepared"
    pretrain.train_projector(data, f"s3://{BUCKET}/projector.pt", epochs=2, max_images=64, log=lambda *_: None)
    cfg = config.from_dict({
        "data": {"uri": data, "endpoint_url": s3_server, "batch_size": 8, "shuffle_buffer": 16},
        "model": {"recognizer_weights": "random-compact", "projector": f"s3://{BUCKET}/projector.pt"},
        "train": {"epochs": 1, "num_workers": 2, "use_gpu": False, "cpus_per_worker": 0.5,
                  "storage": f"s3://{BUCKET}/runs", "name": "from-bucket", "val_probes": 8},
    })
    result = train.fit(cfg, log=lambda *_: None)
    assert result.checkpoint_uri and result.checkpoint_uri.startswith(f"s3://{BUCKET}/runs/from-bucket/")
    assert [epoch for epoch, _ in checkpoints.list_checkpoints(storage.resolve(result.run_uri))] == [0]
    assert result.metrics["epoch"] == 0 and result.metrics["train/images"] > 0
    assert result.metrics["train/data_wait_s"] >= 0


def _files(out: str) -> dict[str, tuple[int, bytes]]:
    found = {}
    for folder in ("gallery", *shards.SPLITS):
        d = os.path.join(out, folder)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            p = os.path.join(d, name)
            found[f"{folder}/{name}"] = (os.stat(p).st_mtime_ns, open(p, "rb").read())
    return found


def test_bad_fraction_fails_in_one_line_and_a_rerun_skips_finished_shards(local_sources, tmp_path, ray_session,
                                                                          capsys):
    src, ex = local_sources
    out = str(tmp_path / "out")
    args = ["data", "prepare", "--ffhq", f"{src}/ffhq", "--maskedfacenet", f"{src}/mfn", "--out", out,
            "--shard-size", "8"]
    assert cli.main(args) == 2  # default --max-bad-fraction 1 %: 5 bad files of ~40 is too many
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"5 of {ex.inputs} input images" in err and "above --max-bad-fraction 1.0%" in err
    assert not os.path.exists(os.path.join(out, "manifest.json"))  # a failed dataset is not published
    report = json.load(open(os.path.join(out, "_prepare", "report.json")))
    assert report["skipped"] and _kinds(report)["bad"] == ex.bad
    before = _files(out)
    assert any(k.startswith("train/") for k in before) and any(k.startswith("gallery/") for k in before)

    # the re-run finds every chunk finished and verified: nothing is rewritten
    assert cli.main(args + ["--max-bad-fraction", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    finals = [line for line in lines if re.search(r": (\d+)/\1 chunks done", line)]
    assert len(finals) == 2  # both stages, every chunk found finished
    assert all(re.search(r": (\d+)/\1 chunks done \(\1 already finished, skipped\)$", line) for line in finals)
    assert "manifest written" in lines[-1]
    assert _files(out) == before
    manifest = shards.read_manifest(storage.resolve(out))
    assert manifest["counts"] == ex.counts

    # a lost shard and a damaged one are redone (same content); the others are left alone
    os.remove(os.path.join(out, "train", "part-00000.parquet"))
    damaged = os.path.join(out, "val", "part-00000.parquet")
    data = bytearray(open(damaged, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(damaged, "wb").write(bytes(data))
    logs: list[str] = []
    again = prepare.run(f"{src}/ffhq", f"{src}/mfn", out, shard_size=8, max_bad_fraction=0.2, log=logs.append)
    pairs_done = [line for line in logs if "derive alpha" in line][-1]
    n = int(re.search(r": (\d+)/", pairs_done).group(1))
    assert pairs_done.endswith(f"{n}/{n} chunks done ({n - 2} already finished, skipped)")
    after = _files(out)
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}
    untouched = [k for k in before if k.startswith(("test/", "gallery/part-test"))]
    assert untouched and all(after[k][0] == before[k][0] for k in untouched)
    assert again["sets"] == manifest["sets"]


def test_no_pairs_and_missing_sources_are_one_line_errors(tmp_path):
    (tmp_path / "ffhq").mkdir()
    (tmp_path / "ffhq" / "00001.png").write_bytes(b"x")
    (tmp_path / "mfn").mkdir()
    (tmp_path / "mfn" / "00002_Mask.jpg").write_bytes(b"x")
    with pytest.raises(prepare.PrepareError, match="no pairs: 1 FFHQ images .* 1 MaskedFace-Net images"):
        prepare.run(str(tmp_path / "ffhq"), str(tmp_path / "mfn"), str(tmp_path / "out"), log=lambda *_: None)
    with pytest.raises(prepare.PrepareError, match="--maskedfacenet .*nowhere: not found"):
        prepare.run(str(tmp_path / "ffhq"), str(tmp_path / "nowhere"), str(tmp_path / "out"), log=lambda *_: None)
    assert prepare.PrepareError.user_error
