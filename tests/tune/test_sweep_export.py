"""A real 4-trial sweep on the shared Ray session (driver killed mid-sweep, then resumed), and exports of its
best checkpoint to moto's S3 server and to a local directory.

One sweep serves every test here (module fixture): trials take ~1 minute each on 2 CPUs.
"""

import csv
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from cluster import ray_workarounds
from data_loader import storage
from maskgan.run import checkpoints
from tune import export, export_folder, sample, sweep
from tune.space import SweepError, load_space

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def _files_with_mtimes(folder):
    return {os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def _tune_statuses(sweep_dir) -> dict:
    """Trial statuses as Tune last saved them (what a restore will see); {} before the first save."""
    from ray.tune import ExperimentAnalysis

    try:
        return {t.trial_id: t.status for t in ExperimentAnalysis(str(sweep_dir)).trials}
    except Exception:
        return {}


def _checkpoints(run_dir) -> dict:
    """{checkpoint folder name: epoch} of a trial's run ({} before its first epoch)."""
    if not os.path.isdir(run_dir):
        return {}
    return {loc.uri.rstrip("/").rsplit("/", 1)[-1]: epoch
            for epoch, loc in checkpoints.list_checkpoints(storage.resolve(str(run_dir)))}


@pytest.fixture(scope="module")
def resumed_sweep(ray_session, make_space, tmp_path_factory):
    """`maskgan tune` as its own driver process attached to the test cluster; killed (SIGKILL) once Tune has
    saved one finished trial and another trial is part-way through its epochs; then resumed here with
    resume=True."""
    tmp = tmp_path_factory.mktemp("sweep")
    space = make_space(tmp / "ci.yaml")
    storage_dir = tmp / "sweeps"
    sweep_dir = storage_dir / "ci"
    epochs = load_space(space).base.train.epochs
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    with open(tmp / "driver.log", "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "cli", "tune", "--space", space,
                                   "--storage", str(storage_dir)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 480
        finished, part_way = [], {}
        while time.time() < deadline:
            assert driver.poll() is None, "the sweep ended before the kill:\n" + open(tmp / "driver.log").read()[-3000:]
            statuses = _tune_statuses(sweep_dir)
            finished = [t for t, st in statuses.items() if st == "TERMINATED"]
            # a trial with a checkpoint but epochs still to run: the kill must interrupt one
            part_way = {t: _checkpoints(sweep_dir / "runs" / t) for t in statuses if t not in finished}
            part_way = {t: c for t, c in part_way.items() if c and max(c.values()) < epochs - 1}
            if finished and part_way:
                break
            time.sleep(0.5)
        assert finished and part_way, "no kill point in time:\n" + open(tmp / "driver.log").read()[-3000:]
    finally:
        driver.kill()  # SIGKILL: the driver dies without any chance to clean up, like a lost head-node process
        driver.wait()
    before = {t: _files_with_mtimes(sweep_dir / "runs" / t) for t in finished}
    # A TERMINATED trial either ran all its epochs or was stopped early by ASHA: remember how many it ran.
    epochs_before = {t: 1 + max(e for e, _ in checkpoints.list_checkpoints(storage.resolve(str(sweep_dir / "runs" / t))))
                     for t in finished}
    # What the interrupted trials had on disk at the kill (re-read now: one may have written a checkpoint since).
    interrupted = {t: {name: (epoch, os.stat(sweep_dir / "runs" / t / name).st_mtime_ns)
                       for name, epoch in _checkpoints(sweep_dir / "runs" / t).items()} for t in part_way}
    interrupted = {t: c for t, c in interrupted.items() if max(e for e, _ in c.values()) < epochs - 1}
    t0 = time.time()
    # The resume must not hang (a killed driver's placement group kept CPUs reserved for good); a
    # daemon thread keeps a hang from blocking the session, and its failure says what was reserved.
    box = {}

    def resume():
        try:
            box["result"] = sweep.run(space, storage_uri=str(storage_dir), resume=True, log=lambda *_: None)
        except BaseException as e:  # noqa: BLE001 (re-raised below)
            box["error"] = e

    worker = threading.Thread(target=resume, daemon=True)
    worker.start()
    worker.join(timeout=900)
    assert not worker.is_alive(), (f"resume still running after 900 s; available {ray_session.available_resources()}, "
                                   f"placement groups {ray_session.util.placement_group_table()}")
    if "error" in box:
        raise box["error"]
    return {"result": box["result"], "dir": sweep_dir, "finished_before_kill": before,
            "epochs_before": epochs_before, "interrupted": interrupted, "space": space,
            "storage": storage_dir, "resume_s": time.time() - t0}


def test_resumed_sweep_does_not_rerun_finished_trials(resumed_sweep):
    rows = resumed_sweep["result"]["rows"]
    runs = resumed_sweep["dir"] / "runs"
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4
    for trial, files in resumed_sweep["finished_before_kill"].items():
        after = _files_with_mtimes(runs / trial)
        # its checkpoints are exactly the ones it had: no epoch trained again
        ckpts = {k: v for k, v in files.items() if k.startswith("checkpoint_")}
        assert ckpts and {k: v for k, v in after.items() if k.startswith("checkpoint_")} == ckpts
        assert next(r for r in rows if r["trial"] == trial)["epochs"] == resumed_sweep["epochs_before"][trial]
    # a second start without --resume is refused rather than mixing two sweeps in one folder
    with pytest.raises(SweepError, match="already holds a sweep; pass --resume"):
        sweep.run(resumed_sweep["space"], storage_uri=str(resumed_sweep["storage"]), log=lambda *_: None)


def test_killed_trials_continue_from_their_checkpoints(resumed_sweep):
    rows = {r["trial"]: r for r in resumed_sweep["result"]["rows"]}
    runs = resumed_sweep["dir"] / "runs"
    assert resumed_sweep["interrupted"]
    for trial, had in resumed_sweep["interrupted"].items():
        assert had, trial
        done_at_kill = max(epoch for epoch, _ in had.values())
        now = {name: (epoch, os.stat(runs / trial / name).st_mtime_ns)
               for name, epoch in _checkpoints(runs / trial).items()}
        # it trained on after the kill ...
        assert rows[trial]["epochs"] > done_at_kill + 1 and max(e for e, _ in now.values()) > done_at_kill, (trial, had, now)
        # ... from its checkpoint: no epoch it had finished was trained again (every checkpoint of such an
        # epoch is one it had, untouched; older ones may have been deleted by num_to_keep)
        redone = {name: v for name, v in now.items() if v[0] <= done_at_kill and had.get(name) != v}
        assert not redone, (trial, had, now)


def test_asha_stops_a_trial_early_and_the_guard_keeps_collapsed_trials_from_winning(resumed_sweep):
    rows = resumed_sweep["result"]["rows"]
    assert all(r["status"] in ("completed", "stopped early") for r in rows), rows
    stopped = [r for r in rows if r["status"] == "stopped early"]
    assert stopped and all(r["epochs"] < 3 for r in stopped)
    assert all(r["epochs"] == 3 for r in rows if r["status"] == "completed")
    # the planted collapse (ci.yaml): every face embeds to one vector, so "generated" looks perfect; the guard says no
    wrecked = [r for r in rows if r["model.recognizer_weights"].endswith("recognizer_collapsed.pt")]
    healthy = [r for r in rows if r not in wrecked]
    assert len(wrecked) == 2 and all(r["guard_ok"] is False and r["objective"] == 1.0 for r in wrecked)
    assert all(r["guard_ok"] is True and r["objective"] < 1.0 for r in healthy)
    best = min(rows, key=lambda r: r["objective"])
    assert best in healthy


def test_the_sweep_leaves_no_credentials_in_rays_logs(resumed_sweep, ray_logs, canaries):
    """Tune copies the driver's AWS keys into each trial's runtime_env, which Ray logs in plain text
    (runtime_env_agent.log); the sweep stops that (cluster/ray_workarounds.py). The keys were in the sweep driver's
    environment all along (the session's S3 server sets them), and its trials ran."""
    assert resumed_sweep["result"]["rows"]  # trials ran, from a killed driver's sweep and an in-process resume
    secrets = [canaries[k].encode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    scanned = 0
    for root, _, files in os.walk(ray_logs):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    text = f.read()
                scanned += 1
                assert not any(s in text for s in secrets), f"an AWS credential is in {path}"
    assert scanned > 10 and os.path.exists(os.path.join(ray_logs, "runtime_env_agent.log"))


def test_results_and_paper_tables(resumed_sweep):
    d = resumed_sweep["dir"]
    with open(d / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4
    for row in table:
        assert row["objective.experiment"] in ("exp1", "exp2") and int(row["epochs"]) in (1, 2, 3)
        for col in ("unmasked/val", "unmasked/test", "original_mask/test", "generated/val", "generated/test",
                    "noise/test"):
            assert 0.0 <= float(row[col]) <= 1.0, (col, row)
        assert json.loads(row["generated/test/ci95"])[0] <= float(row["generated/test"])
        assert os.path.exists(os.path.join(row["run"], "report.json"))
    md = (d / "results.md").read_text()
    assert sum(line.startswith("| ") and "_0000" in line for line in md.splitlines()) == 4
    paper = (d / "paper_table.md").read_text()
    assert "| experiment # | exp0 | exp1 | exp2 | exp3 |" in paper
    for label in ("training accuracy", "testing accuracy", "MaskedFace-Net accuracy", "FFHQ accuracy"):
        line = next(line for line in paper.splitlines() if line.startswith(f"| {label}"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert cells[0] == "–" and cells[3] == "–" and "%" in cells[1] and "%" in cells[2], line


def _objects(client, bucket):
    return {o["Key"]: (o["ETag"], o["LastModified"], o["Size"])
            for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _sample_cli(source, out, n=6):
    return subprocess.run([sys.executable, "-m", "cli", "sample", "--from", source, "--n", str(n),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env={**os.environ})


def test_export_to_s3_then_sample_from_the_bucket_alone(resumed_sweep, bucket, assets, tmp_path, monkeypatch):
    from PIL import Image

    # a commit, as on CI: a working tree with uncommitted changes never lends an export's evaluation to the next one
    monkeypatch.setattr(export, "code_version", lambda: "git 1a2b3c4")
    client = storage.boto3_client()
    uri = f"s3://{bucket}/designs/best"
    res = export.export(str(resumed_sweep["dir"]), uri, log=lambda *_: None,
                        multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    objs = _objects(client, bucket)
    names = {k.removeprefix("designs/best/") for k in objs}
    shipped = json.loads(client.get_object(Bucket=bucket, Key="designs/best/report.json")["Body"].read())
    universal = {f"designs/universal_{k}.png" for k in range(shipped["universal_k"])}
    assert names == {"checkpoint/state.pt", "checkpoint/meta.json", "designs.png", "samples.png", "SHA256SUMS",
                     "model_card.json", "report.json", *universal}  # report.json: the exported checkpoint's own
    assert set(res.uploaded) == names
    state_etag, _, state_size = objs["designs/best/checkpoint/state.pt"]
    assert state_size > 5 * MIB and "-" in state_etag  # went up in parts

    card = json.loads(client.get_object(Bucket=bucket, Key="designs/best/model_card.json")["Body"].read())
    rows = {r["trial"]: r for r in resumed_sweep["result"]["rows"]}
    trial = card["source"]["run"].rstrip("/").rsplit("/", 1)[-1]
    assert rows[trial]["guard_ok"] is True  # never a collapsed recogniser's checkpoint
    assert card["config"]["objective"]["head_lr"] == pytest.approx(1e-4)
    assert card["selection"]["metric"] == "acc/val/generated" and card["selection"]["excluded_by_guard"] >= 2
    assert card["metrics"]["acc/val/generated"] == card["selection"]["value"]
    manifest = (assets / "data" / "manifest.json").read_bytes()
    assert card["data"]["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert card["recognizer"]["weights"] == str(assets / "recognizer.pt")
    assert card["recognizer"]["sha256"] == hashlib.sha256((assets / "recognizer.pt").read_bytes()).hexdigest()
    assert card["code_version"]["export"].startswith(("git ", "maskgan "))
    assert card["code_version"]["training"] == json.loads((resumed_sweep["dir"] / "sweep.json").read_text())["code_version"]
    assert card["arch"]["generator"] == "fc3"
    if card["evaluation"]["same_checkpoint"]:
        lo, hi = card["evaluation"]["accuracy"]["generated"]["ci95"]["test"]
        assert lo <= card["evaluation"]["accuracy"]["generated"]["test"] <= hi
    sums = client.get_object(Bucket=bucket, Key="designs/best/SHA256SUMS")["Body"].read().decode()
    assert {line.split("  ")[1] for line in sums.splitlines()} == names - {"SHA256SUMS"}

    # a fresh process with only the bucket (and the usual AWS_* variables) samples new designs
    r = _sample_cli(uri, tmp_path / "new.png", n=6)
    assert r.returncode == 0, r.stderr[-2000:]
    with Image.open(tmp_path / "new.png") as img:
        assert img.size == (3 * 128, 2 * 64)  # 6 mask-space panels (128 wide, 64 high) in a 3 x 2 grid

    # exporting again uploads nothing: every object keeps its ETag and timestamp; and evaluates nothing again
    time.sleep(1.1)
    said = []
    again = export.export(str(resumed_sweep["dir"]), uri, log=said.append,
                          multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    assert again.uploaded == [] and _objects(client, bucket) == objs
    assert not [line for line in said if line.startswith("evaluating")], said

    # a corrupted object (same size, one byte flipped) is found and named
    body = bytearray(client.get_object(Bucket=bucket, Key="designs/best/checkpoint/state.pt")["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key="designs/best/checkpoint/state.pt", Body=bytes(body))
    r = _sample_cli(uri, tmp_path / "bad.png")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
    assert f"{uri}/checkpoint/state.pt: checksum mismatch" in r.stderr
    assert not (tmp_path / "bad.png").exists()

    # the next export repairs just that object (and rewrites the card last), from the report it had
    said.clear()
    repaired = export.export(str(resumed_sweep["dir"]), uri, log=said.append,
                             multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    assert set(repaired.uploaded) == {"checkpoint/state.pt", "model_card.json"}
    assert not [line for line in said if line.startswith("evaluating")], said
    export_folder.verify_export(uri)


def test_export_a_train_run_to_a_local_folder_and_an_interrupted_export_is_not_taken_for_finished(
        resumed_sweep, tmp_path, monkeypatch):
    best = min(resumed_sweep["result"]["rows"], key=lambda r: r["objective"])
    target = tmp_path / "export"
    res = export.export(best["run"], str(target), log=lambda *_: None)
    assert res.checkpoint.startswith(best["run"])
    assert (target / "model_card.json").exists() and (target / "checkpoint" / "state.pt").exists()
    out = sample.sample(str(target), n=4, out=str(tmp_path / "d.png"), log=lambda *_: None)
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert export.export(best["run"], str(target), log=lambda *_: None).uploaded == []

    # an export that dies before its last object leaves no model card, and sample refuses the folder
    half = tmp_path / "half"
    real_upload = storage.upload

    def upload_then_die(loc, data, *args, **kwargs):
        if loc.uri.endswith("/SHA256SUMS"):
            raise OSError("connection lost")
        real_upload(loc, data, *args, **kwargs)

    monkeypatch.setattr(storage, "upload", upload_then_die)
    with pytest.raises(OSError):
        export.export(best["run"], str(half), log=lambda *_: None)
    assert (half / "checkpoint" / "state.pt").exists() and not (half / "model_card.json").exists()
    with pytest.raises(export_folder.ExportError, match="unfinished export"):
        sample.sample(str(half), n=2, out=str(tmp_path / "x.png"), log=lambda *_: None)


_PG_MAKER = """
import sys, time, ray
ray.init(address=sys.argv[1])

@ray.remote(num_cpus=0)
class Maker:  # like a Train controller starting its worker group when the driver dies
    def loop(self):
        from ray.util.placement_group import placement_group
        while True:
            placement_group([{"CPU": 0.01}])
            time.sleep(0.002)

makers = [Maker.remote() for _ in range(3)]
ray.get([m.__ray_ready__.remote() for m in makers])
for m in makers:
    m.loop.remote()
time.sleep(0.5)
print("making", flush=True)
time.sleep(3600)
"""


def test_placement_groups_a_killed_driver_left_are_freed(ray_session):
    """Ray's own cleanup misses a placement group registered just after its job died (the killed-driver hang):
    `free_leaked_placement_groups` frees it, and never touches a live job's groups."""
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import placement_group, remove_placement_group

    def live_groups():
        accessor = ray_session._private.state.state._connect_and_get_accessor()
        groups = [gcs_pb2.PlacementGroupTableData.FromString(b) for b in accessor.get_placement_group_table()]
        return {g.placement_group_id.hex(): g.creator_job_id.hex() for g in groups
                if g.state != gcs_pb2.PlacementGroupTableData.REMOVED}

    mine = placement_group([{"CPU": 0.01}])  # a live job's group (this session's)
    ray_session.get(mine.ready(), timeout=60)
    driver = subprocess.Popen([sys.executable, "-c", _PG_MAKER, ray_session.get_runtime_context().gcs_address],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert "making" in driver.stdout.readline()
    finally:
        driver.kill()
        driver.wait()
    # Ray marks the job dead once its raylet notices the driver is gone (seconds on a loaded machine); only
    # then is what it left a leak rather than a live job's
    deadline = time.time() + 60
    while not [j for j in ray_session._private.state.state.job_table() if j["DriverPid"] == driver.pid
               and j["IsDead"]] and time.time() < deadline:
        time.sleep(0.5)
    dead_job = next(j["JobID"] for j in ray_session._private.state.state.job_table()
                    if j["DriverPid"] == driver.pid and j["IsDead"])
    lines = []
    ray_workarounds.free_leaked_placement_groups(timeout_s=120, log=lines.append)
    left = live_groups()
    actors = {a["ActorID"]: (a["ActorClassName"], a["State"])
              for a in ray_session._private.state.state.actor_table(None).values() if a["JobID"] == dead_job}
    assert dead_job not in left.values(), (left, lines, actors)
    assert mine.id.hex() in left
    remove_placement_group(mine)
    # (Whether every CPU then comes back is not asserted: on this 2-core machine under three extra busy loops,
    # 0.01 CPU was still held 60 s after the cleanup in 2 of 18 runs, cause not yet found; still open.)
