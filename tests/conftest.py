"""Shared fixtures: one Ray instance per session, real servers on 127.0.0.1, small data made here.

Nothing is mocked in-process: S3 is moto's real HTTP server (pyarrow and Ray workers talk to it over the
network like any S3), Ray is a real local cluster with 2 CPUs, the recogniser has seeded random weights.
"""

from __future__ import annotations

import inspect
import os
import shutil
import socket
import sys
import warnings
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Small and fast everywhere: torch on 2 cores, no Ray Data progress bars, no usage stats.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MASKGAN_METRICS_FLUSH_S", "0")  # runs here need not wait for a metrics export
# Ray Train's controller polls its workers every 2 s by default, so every run here waited up to 2 s after its last
# epoch (and before noticing a dead worker): 0.25 s took 138 s to 124 s for tests/faults/test_training_faults.py
# (docs/testing.md). Set before the session's Ray starts, so its workers, the `cli` subprocesses and the clusters
# tests start inherit it; Ray Train passes it on to its controllers. A latency, not a behaviour: the same code runs.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# Ray Train starts a preemption watcher with every worker group: one more process importing Ray Train (1.2 s of CPU)
# on the path to the first epoch, to react to nodes that drain, and no run on the session's Ray drains one. Off here
# (Ray's own switch); the clusters tests/cluster starts, KubeRay's stand-ins, keep Ray's default (ray_nodes.py).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


# A test that starts a Ray cluster or a training subprocess is `slow`; `make test-quick` runs the rest
# (`-m "not slow"`). Marked by the fixtures it uses, so a new test that takes one of them is sorted with no
# decorator; a test that starts its own cluster or `cli train|demo|tune` process carries @pytest.mark.slow.
SLOW_FIXTURES = {"ray_session", "ray_head", "prometheus_server", "submitted_run"}

# The credentials this session's processes hold are canaries: moto's keys, and a Ray token and a Grafana token set
# before the session's Ray starts (its workers inherit the environment then). tests/faults/test_security.py looks
# for them in the session's run folders, exports, Ray's logs and the console.
CANARIES = {
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-7f3a9c",
    "AWS_ACCESS_KEY_ID": "CANARYKEYID7F3A9C",
    "RAY_AUTH_TOKEN": "canary-ray-token-7f3a9c",
    "GRAFANA_TOKEN": "canary-grafana-token-7f3a9c",
}
_RAY_CANARIES = ("RAY_AUTH_TOKEN", "GRAFANA_TOKEN")  # RAY_AUTH_TOKEN is unused while RAY_AUTH_MODE is not "token"
_RAY_ADDRESS_INFO: dict = {}  # ray.init's answer for the session's instance (its session_dir: ray_logs)


# A whole evaluation of a checkpoint (every split, every design, the defender; an export runs one) takes 15 to 60 s
# on 2 cores even on the tiny assets: a test whose body runs one is `slow` too, for the whole suite, not the
# development loop. (Scoring one batch or one design is not a whole evaluation.)
WHOLE_EVALUATION = ("evaluate_run(", "evaluate_checkpoint(", "export.export(")


def pytest_configure(config):
    """The quick tier runs on two processes (pytest-xdist), one torch thread each (OMP_NUM_THREADS above). A test
    process alone on the machine (the slow tier) uses every core where it computes itself: the evaluations, exports
    and scoring in test bodies run while Ray's workers wait (the paper's-claim run's evaluation: 47.5 s on one
    thread, 28 s on two, 2026-12-07), as `maskgan evaluate` does for a user. Ray's workers still start with
    OMP_NUM_THREADS=1, and the assets are built on one thread whichever tier builds them (_build_assets)."""
    if "PYTEST_XDIST_WORKER" not in os.environ and not getattr(config.option, "numprocesses", None):
        import torch

        torch.set_num_threads(os.cpu_count() or 1)


def pytest_collection_modifyitems(items):
    for item in items:
        uses_ray = bool(SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        # marked slow by hand: it starts its own cluster or a `cli train|demo|tune` process
        starts_its_own = item.get_closest_marker("slow") is not None
        evaluates = _runs_a_whole_evaluation(item)
        if uses_ray or evaluates:
            item.add_marker(pytest.mark.slow)
        if evaluates and not uses_ray and not starts_its_own:
            # Slow only for its computing: `make test` runs it beside the quick tier, not in the Ray session's run.
            item.add_marker(pytest.mark.evaluation)


def _runs_a_whole_evaluation(item) -> bool:
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function else ""
    except (OSError, TypeError):
        return False
    return any(call in source for call in WHOLE_EVALUATION)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """The one Ray instance of the test session (2 CPUs, as on CI).

    Started after moto: Ray workers inherit the environment at start-up, so the AWS_* variables that point
    at the S3 server (and the canary tokens) must be set before Ray starts, or workers of later tests cannot
    reach the bucket."""
    import ray

    old = {k: os.environ.get(k) for k in _RAY_CANARIES}
    os.environ.update({k: CANARIES[k] for k in _RAY_CANARIES})
    if not ray.is_initialized():
        context = ray.init(address="local", num_cpus=2, include_dashboard=True, configure_logging=False,
                           log_to_driver=True)
        _RAY_ADDRESS_INFO.update(context.address_info)
    yield ray
    ray.shutdown()
    _restore(old)


def _restore(old: dict) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def canaries() -> dict[str, str]:
    """{variable: canary value} of the credentials this session holds (CANARIES)."""
    return dict(CANARIES)


@pytest.fixture(scope="session")
def ray_logs(ray_session) -> str:
    """The folder of the session's Ray logs (raylet, GCS, dashboard, every worker), from what ray.init returned."""
    return os.path.join(_RAY_ADDRESS_INFO["session_dir"], "logs")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1; AWS_* point at it for boto3, pyarrow and Ray workers alike."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**{k: CANARIES[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    _restore(old)
    server.stop()


@pytest.fixture
def bucket(s3_server, request):
    """A fresh bucket per test, named after it."""
    from data_loader import storage

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    storage.boto3_client().create_bucket(Bucket=name)
    return name


# The session's assets are the same bytes for the same code and seed, so they are built once per state of the code
# that makes them and kept in ASSET_CACHE/<key> (MASKGAN_TEST_ASSET_CACHE; "off": always build); each session
# works on its own copy, since tests add files there. The key hashes every file under ASSET_SOURCES, this file,
# and torch's and numpy's versions: a change to any of them builds afresh.
ASSET_CACHE = os.environ.get("MASKGAN_TEST_ASSET_CACHE", os.path.expanduser("~/.cache/maskgan/test-assets"))
ASSET_SOURCES = ("data_loader", "maskgan")


def _asset_key() -> str:
    import hashlib

    import numpy
    import torch

    h = hashlib.sha256(f"{torch.__version__} {numpy.__version__}".encode())
    files = [os.path.abspath(__file__)] + sorted(
        os.path.join(d, f) for src in ASSET_SOURCES for d, _, names in os.walk(os.path.join(ROOT, src))
        for f in names if f.endswith(".py"))
    for path in files:
        h.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:20]


def _build_assets(root) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same bytes whether the quick tier (one thread a process) or the slow one builds them
    try:
        _build_assets_on_one_thread(root)
    finally:
        torch.set_num_threads(threads)


def _build_assets_on_one_thread(root) -> None:
    from data_loader import synth
    from maskgan.training import pretrain

    data = str(root / "data")
    synth.generate(data, identities=24, images_per_identity=4, adapt_per_identity=4, adapt_identities=30, seed=0)
    pretrain.train_projector(data, str(root / "projector.pt"), epochs=20, max_images=200, log=lambda *_: None)
    pretrain.adapt_recognizer(data, str(root / "recognizer.pt"), base="random-compact", log=lambda *_: None)
    pretrain.adapt_recognizer(data, str(root / "recognizer_facenet.pt"), base="random", log=lambda *_: None)


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Tiny synthetic dataset + trained projector + adapted recognisers, shared by the whole session.

    24 identities (chance 4 %), 4 probe photos each; the same recipe as the demo, smaller. `recognizer.pt`, the one
    configs name, is the compact trunk's (`random-compact`): several times faster to train and score against,
    so the suite answers sooner. `recognizer_facenet.pt` is facenet's (`random`, as the demo's), for the test
    of the paper's claim itself: the compact trunk is a weaker stand-in that the paper's method fools less
    (docs/testing.md has the figures). 30 adapt identities
    (150 unmasked photos): the held-apart calibration set then holds 10 875 impostor pairs, enough for FAR 1e-3
    (maskgan.evaluation.calibration needs 10 / FAR). Built once per state of the code (ASSET_CACHE above).
    """
    root = tmp_path_factory.mktemp("assets")
    if ASSET_CACHE == "off":
        _build_assets(root)
        return root
    shutil.copytree(build_cached_assets(), root, dirs_exist_ok=True)
    return root


def build_cached_assets() -> str:
    """The cached assets' folder for this state of the code, built first if missing. `make test` calls it before
    the two tiers start beside each other, so the build runs at full priority, once."""
    key = _asset_key()
    cached = os.path.join(ASSET_CACHE, key)
    if not os.path.isdir(cached):
        import fcntl
        import pathlib
        import tempfile

        os.makedirs(ASSET_CACHE, exist_ok=True)
        # One session builds; another (the quick tier's second process, the slow tier) waits for it rather than
        # building the same bytes at once on the same cores.
        with open(os.path.join(ASSET_CACHE, f".lock-{key}"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.isdir(cached):
                building = tempfile.mkdtemp(prefix=".building-", dir=ASSET_CACHE)  # beside it: the rename is atomic
                try:
                    _build_assets(pathlib.Path(building))
                    os.rename(building, cached)
                finally:
                    shutil.rmtree(building, ignore_errors=True)
    return cached


@pytest.fixture(scope="session")
def trained_run(ray_session, assets, tmp_path_factory):
    """One small run trained once for the session (small_cfg's recipe, 2 epochs): a test that only needs some
    trained run takes `trained_run_copy` rather than training its own. Never changed in place."""
    from maskgan.config import recipes
    from maskgan.training import train

    runs = tmp_path_factory.mktemp("trained") / "runs"
    return train.fit(recipes.debug_cpu(str(assets)).replace(train={"storage": str(runs), "name": "t", "epochs": 2}))


@pytest.fixture
def trained_run_copy(trained_run, tmp_path) -> str:
    """This test's own copy of the shared run, where `small_cfg.replace(train={"epochs": 2})` finds it (so it may
    be torn, evaluated or resumed; Ray Train's snapshot in it names checkpoints relative to the run folder)."""
    dst = tmp_path / "runs" / "t"
    shutil.copytree(trained_run.run_uri, dst)
    return str(dst)


@pytest.fixture
def small_cfg(assets, tmp_path):
    """A debug_cpu config over the shared assets, writing runs to this test's tmp dir."""
    from maskgan.config import recipes

    return recipes.debug_cpu(str(assets)).replace(train={"storage": str(tmp_path / "runs"), "name": "t"})


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


# Python's default filters: these categories are hidden from a user outside __main__, every other warning is shown.
_HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@pytest.fixture
def maskgan_cli(capsys, monkeypatch):
    """`maskgan ARGV...` run in this process through cli.main.main: (exit code, stdout, stderr) as a user sees them,
    without a new interpreter importing torch each time. For commands that need no Ray (refusals, --help, and local
    work such as `data synth`, `recognizer adapt`, `export` and `sample`): one that would start Ray fails the test,
    and warnings a user would see are added to stderr."""
    import ray

    from cli.main import main

    def no_ray(*_, **__):
        raise AssertionError("the command started Ray in the test process: run it with a subprocess instead")

    def run(*argv, cwd=None) -> CliResult:
        with monkeypatch.context() as m, warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            m.setattr(ray, "init", no_ray)
            if cwd is not None:
                m.chdir(cwd)
            capsys.readouterr()
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:  # argparse: --help and parse errors
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
            out, err = capsys.readouterr()
        shown = [w for w in seen if not issubclass(w.category, _HIDDEN_WARNINGS)]
        err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown)
        return CliResult(code, out, err)

    return run
