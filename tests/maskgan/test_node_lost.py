"""A run whose Train worker died with its Ray node (a fixed worker count, no retries left) fails with one line
naming the lost node and the checkpoints that are intact, not with Ray's traceback of every rank."""

from __future__ import annotations

import json

import pytest

from data_loader import storage
from maskgan.run import checkpoints
from maskgan.training import train

NODE = "4fa7b582c6704e2a83233af36231ebf249dc84db3e15cda72ff6773b"


def _node_death(node_ip: str = "10.0.3.7"):
    """The exception Ray hands the controller for an actor on a node that stopped answering its health checks,
    built by Ray's own ActorDiedError from the death cause the GCS records."""
    from ray.core.generated.common_pb2 import ActorDiedErrorContext
    from ray.exceptions import ActorDiedError

    cause = ActorDiedErrorContext(
        class_name="RayTrainWorker", actor_id=bytes(16), pid=8858, node_ip_address=node_ip,
        error_message=(f"The actor died because its node has died. Node Id: {NODE}\n\tthe actor's node was "
                       "terminated unexpectedly: health check failed due to missing too many heartbeats"))
    return ActorDiedError(cause)


class _WorkerGroupError(RuntimeError):  # the shape of Ray Train's: every rank's error by rank
    def __init__(self, worker_failures):
        super().__init__("Training failed due to worker errors:\n" + "\n".join(map(str, worker_failures.values())))
        self.worker_failures = worker_failures


def test_lost_node_is_one_line_naming_it_and_the_intact_checkpoints(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    for epoch in (0, 1):  # two committed checkpoints, as list_checkpoints sees them
        folder = tmp_path / "run" / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        (folder / checkpoints.META_FILE).write_text(json.dumps({"epoch": epoch}))
    error = _WorkerGroupError({0: RuntimeError("collective aborted"), 1: _node_death()})
    with pytest.raises(train.NodeLostError) as e:
        train._raise_failure(run, error)
    line = str(e.value)
    assert "\n" not in line
    assert f"Train worker 1 was lost with its Ray node {NODE} (10.0.3.7)" in line
    assert "checkpoints of epochs 1, 2 are intact" in line and "--resume" in line and "train.min_workers" in line
    assert line.endswith(f"(traceback: {run.join(train.FAILURE_LOG).uri})")
    assert "health check failed" in (tmp_path / "run" / train.FAILURE_LOG).read_text()
    assert json.loads((tmp_path / "run" / checkpoints.FAILED_FILE).read_text())["reason"] in line


def test_a_worker_error_that_is_not_a_lost_node_is_not_called_one():
    error = _WorkerGroupError({0: RuntimeError("CUDA error: an illegal memory access was encountered")})
    assert train._lost_node(error) is None
    assert train._lost_node(RuntimeError("no worker failures here")) is None
