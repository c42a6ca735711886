"""A run whose losses become non-finite, or that could read too few of its rows, stops: exit 2, one line (which
loss or which shards, the epoch, the last good checkpoint), no checkpoint of that epoch, FAILED.json in its
folder. The only fault tests here that train (tiny data, 2 epochs at most)."""

import json
import os
import shutil

import pytest
import torch

from maskgan import config


def _write_cfg(cfg, tmp_path) -> str:
    path = tmp_path / "cfg.yaml"
    config.dump(cfg, str(path))
    return str(path)


def _checkpoints(run_dir) -> list[str]:
    return [n for n in os.listdir(run_dir) if n.startswith("checkpoint_")] if os.path.isdir(run_dir) else []


def _error_line(r) -> str:
    """The user's one line: the last stderr line, after whatever Ray printed; no worker traceback on the console."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Error in training function" not in r.stderr, r.stderr[-3000:]
    assert "RunStoppedError" not in r.stdout + r.stderr, r.stderr[-3000:]  # only the traceback names the class
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("maskgan: error: "), r.stderr[-3000:]
    return line


def test_nonfinite_loss_stops_the_run_without_a_checkpoint(ray_session, small_cfg, assets, tmp_path, run_cli):
    # Honest NaNs with no hook: a recogniser weights file whose head has NaN weights (it loads: it is a
    # well-formed, safe file), so the generator's cross-entropy is NaN from the first step.
    weights = torch.load(assets / "recognizer.pt", weights_only=True)
    weights["state_dict"]["last_linear.weight"].fill_(float("nan"))
    torch.save(weights, tmp_path / "nan_head.pt")
    cfg = small_cfg.replace(model={"recognizer_weights": str(tmp_path / "nan_head.pt")},
                            train={"epochs": 2, "name": "nan"})
    address = ray_session.get_runtime_context().gcs_address
    r = run_cli("train", "--config", _write_cfg(cfg, tmp_path), "--address", address, timeout=400)

    line = _error_line(r)
    run_dir = tmp_path / "runs" / "nan"
    assert "train/gen_ce is nan in epoch 1" in line and "last good checkpoint: none" in line, line
    assert f"traceback: {run_dir / 'failure.log'}" in line, line
    assert f"Ray: joined {address}" in r.stdout
    assert not _checkpoints(run_dir)
    failed = json.loads((run_dir / "FAILED.json").read_text())
    assert "train/gen_ce is nan" in failed["reason"]
    assert "Traceback" in (run_dir / "failure.log").read_text()


@pytest.mark.slow  # `cli train` starts its own local Ray
def test_too_few_rows_read_fails_naming_the_shard(small_cfg, assets, tmp_path, run_cli):
    # The "training on nothing exits 0": the only train shard fails its checksum (same size, so only
    # reading it can tell), every row is skipped. This run also starts its own local Ray (no --address, no
    # RAY_ADDRESS) and says so.
    data = tmp_path / "data"
    shutil.copytree(assets / "data", data)
    manifest = json.loads((data / "manifest.json").read_text())
    (shard,) = manifest["sets"]["train"]["shards"]
    path = data / shard["path"]
    blob = bytearray(path.read_bytes())
    for i in range(64):
        blob[len(blob) // 2 + i] ^= 0x5A
    path.write_bytes(bytes(blob))
    cfg = small_cfg.replace(data={"uri": str(data)},
                            train={"epochs": 1, "name": "few", "num_workers": 1, "cpus_per_worker": 1.0})
    env_address = os.environ.pop("RAY_ADDRESS", None)
    try:
        r = run_cli("train", "--config", _write_cfg(cfg, tmp_path), timeout=400)
    finally:
        if env_address is not None:
            os.environ["RAY_ADDRESS"] = env_address

    line = _error_line(r)
    total = manifest["sets"]["train"]["rows"]
    assert f"read 0 of the manifest's {total} train rows" in line and "train.min_rows_fraction 0.99" in line, line
    assert str(path) in line, line
    assert "Ray: started a local instance" in r.stdout
    run_dir = tmp_path / "runs" / "few"
    assert not _checkpoints(run_dir)
    assert (run_dir / "FAILED.json").exists()
