"""Bad weights, missing or truncated shards, a corrupt gallery: `maskgan train` refuses them in one line naming
the file, in seconds, before Ray starts (today's workers found them 40-96 s in, as long tracebacks)."""

import json
import os
import pickle
import shutil
import time

import pytest

from maskgan import config


class _RunsCode:
    """Unpickling this runs a shell command: what a weights file must never be able to do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _bad_projector_text(data, tmp_path):
    path = tmp_path / "projector.pt"
    path.write_text("these are not weights\n")
    return {"model": {"projector": str(path)}}, str(path)


def _bad_projector_empty(data, tmp_path):
    path = tmp_path / "projector.pt"
    path.write_bytes(b"")
    return {"model": {"projector": str(path)}}, str(path)


def _bad_recognizer_pickle(data, tmp_path):
    path = tmp_path / "recognizer.pt"
    path.write_bytes(pickle.dumps(_RunsCode(str(tmp_path / "code-ran"))))
    return {"model": {"recognizer_weights": str(path)}}, str(path)


def _bad_palette(data, tmp_path):
    path = tmp_path / "palette.json"
    path.write_text('{"format": "maskgan-palette/1", "colours": [[300, 0, 0]]}\n')  # 300 is not a colour
    return {"objective": {"palette": str(path), "nps_weight": 1.0}}, str(path)


def _first_shard(data, set_name: str) -> str:
    manifest = json.loads((data / "manifest.json").read_text())
    return str(data / manifest["sets"][set_name]["shards"][0]["path"])


def _missing_shard(data, tmp_path):
    path = _first_shard(data, "test")
    os.remove(path)
    return {}, path


def _truncated_shard(data, tmp_path):
    path = _first_shard(data, "train")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return {}, path


def _corrupt_gallery_shard(data, tmp_path):
    path = _first_shard(data, "gallery")
    blob = bytearray(open(path, "rb").read())
    for i in range(64):  # same size, other bytes: only reading it can tell
        blob[len(blob) // 2 + i] ^= 0x5A
    with open(path, "wb") as f:
        f.write(bytes(blob))
    return {}, path


@pytest.mark.parametrize("spoil", [_bad_projector_text, _bad_projector_empty, _bad_recognizer_pickle,
                                   _missing_shard, _truncated_shard, _corrupt_gallery_shard, _bad_palette],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_line_before_ray_starts(spoil, small_cfg, assets, tmp_path, run_cli):
    data = tmp_path / "data"
    shutil.copytree(assets / "data", data)
    sections, bad_file = spoil(data, tmp_path)
    cfg = small_cfg.replace(data={"uri": str(data)}, train={"epochs": 1}).replace(**sections)
    path = tmp_path / "cfg.yaml"
    config.dump(cfg, str(path))

    t0 = time.monotonic()
    r = run_cli("train", "--config", path, timeout=120)
    elapsed = time.monotonic() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("maskgan: error: ") and bad_file in lines[0], r.stderr[-2000:]
    assert "Ray" not in r.stdout + r.stderr  # refused before Ray was started or joined
    assert elapsed < 60, f"took {elapsed:.0f} s"  # CPU-starved CI included; unloaded it is a few seconds
    assert not (tmp_path / "code-ran").exists()
    assert not (tmp_path / "runs").exists()  # nothing was written for the run


def test_missing_shard_in_a_bucket_is_found_by_listing(small_cfg, assets, bucket, tmp_path, run_cli):
    from data_loader import storage

    client = storage.boto3_client()
    data = assets / "data"
    manifest = json.loads((data / "manifest.json").read_text())
    gone = manifest["sets"]["val"]["shards"][0]["path"]
    for path in data.rglob("*"):
        rel = path.relative_to(data).as_posix()
        if path.is_file() and rel != gone:
            client.upload_file(str(path), bucket, f"data/{rel}")
    cfg = small_cfg.replace(data={"uri": f"s3://{bucket}/data"}, train={"epochs": 1})
    path = tmp_path / "cfg.yaml"
    config.dump(cfg, str(path))
    r = run_cli("train", "--config", path, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == f"maskgan: error: s3://{bucket}/data/{gone}: missing; listed in s3://{bucket}/data/manifest.json"
    assert "Ray" not in r.stdout
