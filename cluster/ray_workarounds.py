"""Workarounds of Ray behaviour, each on Ray's public APIs, naming its upstream issue, and switched off by a version
check once Ray is past the last version known to have the bug.

Leaked placement groups (ray-project/ray#62753, "Race condition in PlacementGroupCleaner: newly registered
PG orphaned on controller death"; open, seen on Ray 2.55 and 2.60): when a sweep's driver is killed, the job's
actors die a few milliseconds apart, one ownership level at a time (trial actor, `_fit` task, Train controller).
A Train controller that was starting its worker group in between registers its placement group after the job's
own cleanup ran (gcs_server.out shows "Marking job as finished. job_id=02000000" followed by "Registering placement
group ...02000000"), and Train's detached PlacementGroupCleaner exits with the previous group: nothing removes
the new one, and its CPUs stay reserved for the life of the cluster. On a 2-CPU cluster a leaked 0.5-CPU worker
bundle next to two resumed trials' bundles leaves 0.5 CPU, so Ray Data's 1-CPU read tasks never start and a
resumed sweep waits forever. `free_leaked_placement_groups` frees such groups before a sweep schedules trials.

Credentials in Ray's logs (ray-project/ray#28276, "Secure Env Variables"; open): Tune copies the driver's
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and session token into every trial actor's runtime_env (the private
`ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`, Ray 2.60), and Ray's runtime-env agent writes each
runtime_env it creates, values included, to the session's runtime_env_agent.log. `keep_credentials_out_of_trials`
takes the AWS names out of that set (the one reach into Ray's internals here), so trials read credentials from
their node's own environment: a local Ray inherits the driver's when the driver starts it, and on KubeRay they
come from the pod (a Secret or a cloud role), never from a log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# The newest Ray (major, minor) known to leak placement groups as above. Past it, the cleanup does nothing: check
# ray-project/ray#62753 when upgrading Ray, and raise this if it is still open (tests/tune's killed-driver resume hangs if so).
LEAKED_PLACEMENT_GROUPS_LAST_AFFECTED = (2, 60)
# The newest Ray known to copy AWS credentials into trials' runtime_env; check ray-project/ray#28276 (or Tune's
# class_cache.py) when upgrading Ray, and raise this if it still does (tests/tune's log scan fails if so).
CREDENTIALS_IN_TRIAL_ENV_LAST_AFFECTED = (2, 60)
_STATE_LIMIT = 10_000  # the state API server's own cap (RAY_MAX_LIMIT_FROM_API_SERVER)
_RECENT_DEATH_MS = 300_000  # a job that died this recently may still have a registration in flight


def leaks_placement_groups(ray_version: str | None = None) -> bool:
    """Whether this Ray is one known to leak a killed driver's placement groups (ray-project/ray#62753)."""
    from packaging.version import Version

    if ray_version is None:
        import ray

        ray_version = ray.__version__
    return Version(ray_version).release[:2] <= LEAKED_PLACEMENT_GROUPS_LAST_AFFECTED


def keep_credentials_out_of_trials(ray_version: str | None = None) -> frozenset[str]:
    """Stop Tune copying the driver's AWS credentials into trial actors' runtime_env (logged by Ray in plain text:
    see the module docstring); return the names it no longer copies. Nothing past the last affected Ray."""
    import ray
    from packaging.version import Version
    from ray.tune.execution import class_cache  # private: ray-project/ray#28276; remove when Ray stops copying

    if Version(ray_version or ray.__version__).release[:2] > CREDENTIALS_IN_TRIAL_ENV_LAST_AFFECTED:
        return frozenset()
    dropped = frozenset(n for n in class_cache.ENV_VARS_TO_PROPAGATE if n.startswith("AWS_"))
    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - dropped
    return dropped


def free_leaked_placement_groups(timeout_s: float = 60.0, settle_s: float = 1.0, watch_s: float = 15.0,
                                 log=print) -> list[str]:
    """Remove the placement groups that killed drivers left reserved; return their ids (hex).

    First wait (up to `timeout_s`) until the non-detached actors of dead jobs are gone, after which no more
    placement groups can come from those jobs; then remove the groups that Ray itself should have removed: not
    detached, created by a dead job, and with no live creator. Ray's state API does not name a group's creator
    actor, so "no live creator" is read as: every non-detached actor of its job is dead (waited for above), and
    no live actor runs in the group. Another live job's groups, detached groups, and groups that live detached
    actors (Serve, ...) use are never touched. A request that one of the dead actors sent just before it died
    can be registered seconds later on a loaded head node, so while a job died in the last five minutes, look
    again every `settle_s` for `watch_s`. Best effort: callers should log and go on if this raises.
    """
    if not leaks_placement_groups():
        return []
    import ray

    # The connected cluster's address: without one the state API looks for a local Ray and refuses when it
    # finds several (tests, a laptop running two sessions).
    address = ray.get_runtime_context().gcs_address
    dead = _wait_for_dead_jobs_actors(address, timeout_s, log)
    if not dead.jobs:
        return []
    removed = _remove_leaked_groups(address, dead.jobs, log)
    watch_until = time.monotonic() + (watch_s if dead.recent else 0)
    while time.monotonic() < watch_until:
        time.sleep(settle_s)
        removed += _remove_leaked_groups(address, dead.jobs, log)
    if removed:
        log(f"freed {len(removed)} placement group(s) that a killed driver's job left reserved: {', '.join(removed)}")
    return removed


@dataclass
class _DeadJobs:
    jobs: set[str]  # ids of the jobs whose driver is gone
    recent: bool  # one of them died within _RECENT_DEATH_MS: a group registration may still be in flight


def _live_actors(address: str) -> list:
    from ray.util import state as ray_state

    return ray_state.list_actors(address, filters=[("state", "!=", "DEAD")], detail=True, limit=_STATE_LIMIT)


def _wait_for_dead_jobs_actors(address: str, timeout_s: float, log) -> _DeadJobs:
    """The dead jobs, once none of their non-detached actors is alive any more (after which they can register
    no more placement groups), or after `timeout_s` (logged) with whatever is still dying."""
    from ray.job_submission import JobStatus
    from ray.util import state as ray_state

    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [j for j in ray_state.list_jobs(address, detail=True, limit=_STATE_LIMIT)
                if j.job_id and JobStatus(j.status).is_terminal()]
        dead = _DeadJobs({j.job_id for j in jobs},
                         any(time.time() * 1000 - (j.end_time or 0) < _RECENT_DEATH_MS for j in jobs))  # ms since epoch
        if not dead.jobs:
            return dead
        dying = [a for a in _live_actors(address) if a.job_id in dead.jobs and not a.is_detached]
        if not dying:
            return dead
        if time.monotonic() > deadline:
            log(f"warning: {len(dying)} actor(s) of a dead driver's job still alive after {timeout_s:.0f} s "
                f"({', '.join(sorted({a.class_name for a in dying}))}); freeing what they left so far")
            return dead
        time.sleep(0.5)


def _remove_leaked_groups(address: str, dead_jobs: set[str], log) -> list[str]:
    """Remove the non-detached groups of dead jobs that no live actor runs in; return their ids (hex)."""
    from ray import PlacementGroupID
    from ray.util import remove_placement_group
    from ray.util import state as ray_state
    from ray.util.placement_group import PlacementGroup

    groups = ray_state.list_placement_groups(address, filters=[("state", "!=", "REMOVED")], detail=True,
                                             limit=_STATE_LIMIT)
    leaked = [g for g in groups if not g.is_detached and g.creator_job_id in dead_jobs]
    if not leaked:
        return []
    in_use = {a.placement_group_id for a in _live_actors(address) if a.placement_group_id}
    removed = []
    for g in leaked:
        if g.placement_group_id in in_use:
            continue
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(g.placement_group_id)))
        except Exception as e:  # removed meanwhile: nothing left to free
            log(f"warning: could not remove placement group {g.placement_group_id}: {e}")
            continue
        removed.append(g.placement_group_id)
    return removed
