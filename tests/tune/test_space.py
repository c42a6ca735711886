"""Search space files, the recogniser guard, trial concurrency and the tables: no Ray needed."""

import os

import pytest
import yaml

from cluster.ray_workarounds import keep_credentials_out_of_trials
from tune import guard, results, schedulers, sweep, trial
from tune.space import Guard, SpaceError, load_space, param_space, parse_space, trial_config

SPACES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tune", "spaces")


def test_paper_space_is_the_papers_grid():
    space = load_space(os.path.join(SPACES, "paper.yaml"))
    assert space.grid == {"objective.experiment": ["exp0", "exp1", "exp2", "exp3"], "model.generator": ["fc3"]}
    assert not (space.choice or space.loguniform or space.uniform)
    # the base points at `make demo`'s output
    assert space.base.data.uri == "demo_out/data" and space.base.model.projector == "demo_out/projector.pt"


def test_explore_space_covers_generators_rates_lambda_and_batch():
    space = load_space(os.path.join(SPACES, "explore.yaml"))
    assert space.grid["model.generator"] == ["fc3", "fc_deep", "conv"]
    assert len(space.grid["objective.experiment"]) == 4
    assert {"objective.g_lr", "objective.head_lr"} <= set(space.loguniform)
    assert {"objective.l1_lambda", "data.batch_size"} <= set(space.choice)
    ps = param_space(space)
    assert set(ps) == set(space.axes)
    cfg = trial_config(space, {"model.generator": "conv", "objective.g_lr": 0.003, "data.batch_size": 16},
                             "/tmp/sweeps/explore/runs", "abc_00001")
    assert (cfg.model.generator, cfg.objective.g_lr, cfg.data.batch_size) == ("conv", 0.003, 16)
    assert (cfg.train.storage, cfg.train.name) == ("/tmp/sweeps/explore/runs", "abc_00001")


def test_printable_space_sweeps_tv_and_nps_weights_and_the_table_shows_the_trade_off():
    space = load_space(os.path.join(SPACES, "printable.yaml"))
    assert set(space.grid) == {"objective.tv_weight", "objective.nps_weight"}
    assert 0.0 in space.grid["objective.tv_weight"] and 0.0 in space.grid["objective.nps_weight"]  # the paper's point
    cfg = trial_config(space, {"objective.tv_weight": 3.0, "objective.nps_weight": 5.0}, "/tmp/s/runs", "p_00008")
    assert (cfg.objective.tv_weight, cfg.objective.nps_weight) == (3.0, 5.0)
    row = {"trial": "p_00008", "status": "completed", "objective.tv_weight": 3.0, "objective.nps_weight": 5.0,
           "epochs": 6, "objective": 0.2, "universal/test/dodging": 0.75, "universal/tv": 0.012,
           "universal/nps": 0.031, "noise/tv": 0.333}
    md = results.results_markdown([row], space)
    assert "| universal dodging test | universal TV | universal NPS | noise TV |" in md
    assert any(line.startswith("| p_00008 |") and line.endswith("| 75.0% | 0.012 | 0.031 | 0.333 |")
               for line in md.splitlines()), md
    header = results.results_csv([row], space).splitlines()[0].split(",")
    assert {"universal/test/dodging", "universal/tv", "universal/nps", "noise/tv"} <= set(header)


def test_diversity_space_sweeps_the_mode_seeking_weight_and_the_table_shows_diversity():
    space = load_space(os.path.join(SPACES, "diversity.yaml"))
    assert space.grid == {"objective.diversity_weight": [0.0, 0.01, 0.03, 0.1], "model.generator": ["fc3", "cond_fc3"]}
    cfg = trial_config(space, {"objective.diversity_weight": 0.03}, "/tmp/s/runs", "d_00002")
    assert cfg.objective.diversity_weight == 0.03 and cfg.objective.tv_weight == 0.3  # the demo's recipe
    row = {"trial": "d_00002", "status": "completed", "objective.diversity_weight": 0.03, "model.generator": "fc3",
           "epochs": 6, "objective": 0.2, "diversity": 0.0412, "universal/test/dodging": 0.75}
    md = results.results_markdown([row], space)
    assert "| diversity | universal dodging test |" in md
    assert any(line.startswith("| d_00002 |") and "| 0.0412 | 75.0% |" in line for line in md.splitlines()), md
    header = results.results_csv([row], space).splitlines()
    assert "diversity" in header[0].split(",") and "0.0412" in header[1]


BASE = {"data": {"uri": "d"}, "model": {"projector": "p.pt"}}


@pytest.mark.parametrize("space, needle", [
    ({"base": BASE, "grid": {"objective.expriment": ["exp1"]}}, "grid.objective.expriment: unknown field"),
    ({"base": BASE, "grid": {"model.generator": ["fc3", "vit"]}}, "grid.model.generator: 'vit' is not allowed"),
    ({"base": BASE, "choice": {"data.batch_size": [8, -1]}}, "choice.data.batch_size: must be an integer in [1, 65536], got -1"),
    ({"base": BASE, "loguniform": {"objective.g_lr": [0, 0.1]}}, "loguniform.objective.g_lr: loguniform needs low > 0"),
    ({"base": BASE, "uniform": {"data.batch_size": [8, 32]}}, "uniform.data.batch_size: uniform needs a float field"),
    ({"base": BASE, "grid": {"train.epochs": [1, 2]}}, "grid.train.epochs: cannot be swept"),
    ({"base": BASE, "grid": {"generator": ["fc3"]}}, "grid.generator: not a config field"),
    ({"base": BASE, "grid": {"objective.g_lr": [0.1]}, "loguniform": {"objective.g_lr": [0.01, 0.1]}},
     "loguniform.objective.g_lr: already an axis under grid"),
    ({"base": {"data": {"uri": "d", "batch": 8}}}, "base.data.batch: unknown field"),
    ({"base": BASE, "sheduler": "asha"}, "sheduler: unknown key"),
    ({"base": BASE, "guard": {"rows": ["generated"]}}, "guard.rows:"),
    ({"base": BASE, "asha": {"grace_period": 0}}, "asha.grace_period: expected an integer >= 1"),
    ({"grid": {}}, "base: required"),
    ({"base": BASE, "pbt": {"mutations": {"data.batch_size": [8, 16]}}}, "pbt.mutations.data.batch_size: not mutable"),
    ({"base": BASE, "pbt": {"mutations": {"objective.g_lr": [0.1]}}}, "pbt.mutations.objective.g_lr: expected [low, high]"),
    ({"base": BASE, "grid": {"train.init_from": ["x"]}}, "grid.train.init_from: cannot be swept"),
])
def test_bad_space_names_the_key(space, needle):
    with pytest.raises(SpaceError) as e:
        parse_space(space, "s.yaml")
    assert str(e.value).startswith("s.yaml: ") and needle in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_space_is_one_line(tmp_path, maskgan_cli):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"base": BASE, "grid": {"model.generator": ["fc3", "vit"]}}))
    r = maskgan_cli("tune", "--space", str(p), "--storage", str(tmp_path / "sweeps"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "grid.model.generator: 'vit' is not allowed" in r.stderr
    assert not (tmp_path / "sweeps").exists()


def test_cli_pbt_that_could_never_perturb_is_refused(make_space, tmp_path, maskgan_cli):
    space = make_space(tmp_path / "pbt.yaml", pbt={"perturbation_interval": 3})  # ci.yaml trains 3 epochs
    r = maskgan_cli("tune", "--space", space, "--storage", str(tmp_path / "sweeps"), "--scheduler", "pbt")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "pbt.perturbation_interval: 3 epochs" in r.stderr and "train.epochs is 3" in r.stderr
    assert not (tmp_path / "sweeps" / "ci" / "sweep.json").exists()


def test_resume_without_a_sweep_says_so(ci_space, tmp_path, maskgan_cli):
    r = maskgan_cli("tune", "--space", ci_space, "--storage", str(tmp_path / "nowhere"), "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_guard_a_collapsed_recogniser_never_wins():
    floors = guard.guard_floors({"unmasked": 0.9, "original_mask": 0.8}, Guard())
    assert floors == {"unmasked": 0.45, "original_mask": 0.4}
    healthy = {"epoch": 0, "acc/val/unmasked": 0.85, "acc/val/original_mask": 0.7, "acc/val/generated": 0.3}
    forgot_everyone = {"epoch": 1, "acc/val/unmasked": 0.1, "acc/val/original_mask": 0.0, "acc/val/generated": 0.0}
    forgot_masks = {"epoch": 1, "acc/val/unmasked": 0.9, "acc/val/original_mask": 0.05, "acc/val/generated": 0.0}
    assert guard.guarded(healthy, floors) == {"epochs_done": 1, "guard/ok": True, "objective": 0.3}
    for collapsed in (forgot_everyone, forgot_masks):
        g = guard.guarded(collapsed, floors)
        assert g["guard/ok"] is False and g["objective"] == 1.0 > guard.guarded(healthy, floors)["objective"]
    # an absolute floor as well as the ratio
    strict = Guard(rows=("unmasked",), min_ratio=0.5, min_accuracy=0.95)
    assert guard.guarded(healthy, guard.guard_floors({"unmasked": 0.9}, strict))["objective"] == 1.0


@pytest.mark.parametrize("workers, cpw, use_gpu, resources, expected", [
    (1, 0.5, False, {"CPU": 2.0}, 2),  # CI: two 0.5-CPU trials, one CPU left for Ray Data's reads
    (2, 0.5, False, {"CPU": 2.0}, 1),  # the debug_cpu recipe
    (2, 0.5, False, {"CPU": 1.0}, 1),  # never zero
    (2, 8, "auto", {"CPU": 128.0, "GPU": 8.0}, 4),  # by GPUs
    (8, 8, True, {"CPU": 128.0, "GPU": 8.0}, 1),
])
def test_concurrency_from_the_cluster(workers, cpw, use_gpu, resources, expected):
    base = load_space(os.path.join(SPACES, "ci.yaml")).base
    base = base.replace(train={"num_workers": workers, "cpus_per_worker": cpw, "use_gpu": use_gpu})
    assert schedulers.max_concurrent_trials(base, resources) == expected


def test_paper_table_has_experiment_columns_and_the_papers_rows():
    space = load_space(os.path.join(SPACES, "paper.yaml"))

    def row(trial, exp, objective, gen_train, gen_test):
        r = {"trial": trial, "objective.experiment": exp, "model.generator": "fc3", "objective": objective,
             "illustrative_only": True}
        r.update({"generated/train": gen_train, "generated/test": gen_test, "original_mask/test": 0.8,
                  "unmasked/test": 1.0})
        return r

    rows = [row("t0", "exp0", 0.5, 0.06, 0.2), row("t1", "exp1", 0.4, 0.15, 0.3), row("t1b", "exp1", 0.9, 0.9, 0.9),
            row("t3", "exp3", 0.2, 0.006, 0.1)]
    table = results.paper_table(rows, space)
    lines = table.splitlines()
    assert "| experiment # | exp0 | exp1 | exp2 | exp3 |" in lines
    assert "| training accuracy | 6.0% | 15.0% | – | 0.6% |" in lines  # exp1: the better-objective trial
    assert "| testing accuracy | 20.0% | 30.0% | – | 10.0% |" in lines
    assert any(line.startswith("| MaskedFace-Net accuracy") and "80.0%" in line for line in lines)
    assert any(line.startswith("| FFHQ accuracy") and "100.0%" in line for line in lines)
    assert "Illustrative only" in table


def test_asha_rung_records_survive_a_driver_restart(tmp_path):
    """Tune restores trials, not scheduler state: our ASHA reloads its rung records, so a trial resumed after
    the driver died is still compared with the trials that finished before."""
    import ray.cloudpickle as cloudpickle

    space = load_space(os.path.join(SPACES, "ci.yaml"))

    class T:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    def fresh(pickled=None):
        s = cloudpickle.loads(pickled) if pickled else schedulers.make_scheduler("asha", space, str(tmp_path))
        s.set_search_properties(guard.METRIC, "min")
        return s

    first = fresh()
    pickled = cloudpickle.dumps(first)  # what tuner.pkl holds: the scheduler before any result
    for tid, objective in (("a", 0.5), ("b", 0.3)):  # b is better: both go on
        first.on_trial_add(None, T(tid))
        assert first.on_trial_result(None, T(tid), {"epochs_done": 1, guard.METRIC: objective}) == "CONTINUE"
    assert (tmp_path / schedulers.ASHA_STATE).exists()

    restored = fresh(pickled)  # the driver died; --resume unpickles tuner.pkl
    restored.on_trial_add(None, T("c"))
    assert restored.on_trial_result(None, T("c"), {"epochs_done": 1, guard.METRIC: 1.0}) == "STOP"
    forgetful = fresh()  # without the records, the same trial would have been let through
    (tmp_path / schedulers.ASHA_STATE).unlink()
    forgetful.on_trial_add(None, T("c"))
    assert forgetful.on_trial_result(None, T("c"), {"epochs_done": 1, guard.METRIC: 1.0}) == "CONTINUE"


def test_pbt_leaves_a_trials_last_report_alone():
    """An exploit at a trial's last epoch would copy the donor's final checkpoint over the trial's run and train
    nothing after it: that report is answered CONTINUE without PBT; an earlier one goes to PBT (which, given no
    trial it knows, fails looking it up)."""
    space = parse_space({"name": "p", "base": {"data": {"uri": "/d"}, "model": {"projector": "/p.pt"},
                                                "train": {"epochs": 4}},
                         "pbt": {"perturbation_interval": 1, "mutations": {"objective.g_lr": [1.0e-3, 1.0e-1]}}})
    pbt = schedulers.make_scheduler("pbt", space)
    pbt.set_search_properties(guard.METRIC, "min")  # as the Tuner sets it
    assert pbt.on_trial_result(None, None, {guard.TIME_ATTR: 4, guard.METRIC: 1.0}) == "CONTINUE"
    with pytest.raises(KeyError):
        pbt.on_trial_result(None, None, {guard.TIME_ATTR: 3, guard.METRIC: 1.0})


def test_pbt_min_improvement_spares_a_trial_as_good_as_its_donors():
    """With pbt.min_improvement, the bottom quarter is replaced only by trials better by more than the margin: two
    equally good trials no longer clone each other back and forth (each clone a Train restart), while a collapsed
    trial (objective 1.0) still is. Without it, Tune's rule: the bottom quarter always."""
    from types import SimpleNamespace

    def quarters(min_improvement, objectives):
        pbt_spec = {"perturbation_interval": 1, "mutations": {"objective.g_lr": [1.0e-3, 1.0e-1]}}
        if min_improvement is not None:
            pbt_spec["min_improvement"] = min_improvement
        space = parse_space({"name": "p", "base": {"data": {"uri": "/d"}, "model": {"projector": "/p.pt"},
                                                    "train": {"epochs": 4}}, "pbt": pbt_spec})
        pbt = schedulers.make_scheduler("pbt", space)
        pbt.set_search_properties(guard.METRIC, "min")
        class Trial:  # what _quantiles asks of a trial
            def __init__(self, name):
                self.name = name

            def is_finished(self):
                return False

        trials = {name: Trial(name) for name in objectives}
        # Tune's per-trial state, as its on_trial_result leaves it (the score is -objective under "min")
        pbt._trial_state = {trials[n]: SimpleNamespace(last_score=-objective) for n, objective in objectives.items()}
        lower, upper = pbt._quantiles()
        return [t.name for t in lower], [t.name for t in upper]

    close = {"a": 0.4375, "b": 0.375}  # one val probe apart
    assert quarters(None, close) == (["a"], ["b"])  # Tune's rule
    assert quarters(0.25, close) == ([], ["b"])  # spared: "a" trains on with its own run
    assert quarters(0.25, {"a": 1.0, "b": 0.375}) == (["a"], ["b"])  # the collapsed trial is still replaced
    four = {"w": 1.0, "x": 0.5, "y": 0.45, "z": 0.3}
    assert quarters(0.1, four) == (["w"], ["z"])
    with pytest.raises(SpaceError, match=r"pbt.min_improvement: must be a finite number in \[0, 1\), got 1.5"):
        quarters(1.5, close)


def test_relative_paths_are_the_users_and_missing_data_is_one_line(tmp_path, monkeypatch, maskgan_cli):
    monkeypatch.chdir(tmp_path)
    space = sweep.with_absolute_paths(load_space(os.path.join(SPACES, "paper.yaml")))
    # trials run in other processes and folders: the demo_out/ paths must name the user's demo_out/
    assert space.base.data.uri == str(tmp_path / "demo_out" / "data")
    assert space.base.model.projector == str(tmp_path / "demo_out" / "projector.pt")
    r = maskgan_cli("tune", "--space", os.path.join(SPACES, "paper.yaml"), "--storage", str(tmp_path / "sweeps"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert f"{tmp_path}/demo_out/data: no manifest.json" in r.stderr
    assert not (tmp_path / "sweeps").exists()


def _checkpoint_bytes(tag: str) -> bytes:
    """A small state.pt that checkpoints.read_checkpoint accepts (its format marker), told apart by `tag`."""
    import io

    import torch

    from maskgan.run import checkpoints

    buf = io.BytesIO()
    torch.save({"format": checkpoints.CKPT_FORMAT, "tag": tag}, buf)
    return buf.getvalue()


WEAK, STRONG = _checkpoint_bytes("weak"), _checkpoint_bytes("strong")


def _fake_checkpoint(folder, payload: bytes, epoch: int):
    import hashlib
    import json

    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(payload)
    (folder / "meta.json").write_text(json.dumps({"epoch": epoch, "sha256": hashlib.sha256(payload).hexdigest()}))


def test_pbt_clone_replaces_the_weak_run_once_and_a_vanished_donor_keeps_it(tmp_path):
    import json

    from data_loader import storage
    from maskgan.config import recipes

    cfg = recipes.debug_cpu(str(tmp_path)).replace(train={"storage": str(tmp_path / "runs"), "name": "weak"})
    weak, strong = tmp_path / "runs" / "weak", tmp_path / "runs" / "strong"
    _fake_checkpoint(weak / "checkpoint_a", WEAK, 0)
    _fake_checkpoint(strong / "checkpoint_b", STRONG, 1)
    guard = {"floors": {"unmasked": 0.4}}
    run, lines = storage.resolve(str(weak)), []

    gone = {"run": str(strong), "checkpoint": str(strong / "checkpoint_gone"), "epoch": 1}
    assert trial._adopt(cfg, run, gone, guard, lines.append) == cfg  # nothing to clone: keep the own run
    assert "cannot clone" in lines[-1] and (weak / "checkpoint_a" / "state.pt").read_bytes() == WEAK

    (strong / "checkpoint_b" / "state.pt").write_bytes(b"torn")  # fails its checksum: not cloned either
    start = {"run": str(strong), "checkpoint": str(strong / "checkpoint_b"), "epoch": 1}
    assert trial._adopt(cfg, run, start, guard, lines.append) == cfg and "checksum mismatch" in lines[-1]
    (strong / "checkpoint_b" / "state.pt").write_bytes(STRONG)

    adopted = trial._adopt(cfg, run, start, guard, lines.append)
    clone = weak / "checkpoint_pbt_0001"
    assert adopted.train.init_from == str(clone) and adopted.objective == cfg.objective
    assert sorted(p.name for p in weak.iterdir()) == ["checkpoint_pbt_0001", "guard.json", "pbt.json"]
    assert (clone / "state.pt").read_bytes() == STRONG and json.loads((weak / "guard.json").read_text()) == guard
    assert json.loads((weak / "pbt.json").read_text())[0]["from"] == str(strong / "checkpoint_b")
    mtime = (clone / "meta.json").stat().st_mtime_ns
    # the trial restarted before reporting from the clone: the same start is not copied again
    assert trial._adopt(cfg, run, start, guard, lines.append).train.init_from == str(clone)
    assert (clone / "meta.json").stat().st_mtime_ns == mtime and len(json.loads((weak / "pbt.json").read_text())) == 1


def test_trials_no_longer_get_the_drivers_aws_keys_in_their_logged_runtime_env(monkeypatch):
    """Tune puts the driver's AWS keys in each trial actor's runtime_env, which Ray writes to its logs; after
    keep_credentials_out_of_trials it puts none there (other variables still travel)."""
    import importlib.util

    from ray.tune.execution import class_cache

    # Ray's own set, read from its source: an in-process sweep earlier in the session has already trimmed the
    # module's (test_pbt.py). Set for this test only.
    spec = importlib.util.find_spec(class_cache.__name__)
    as_shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(as_shipped)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", as_shipped.ENV_VARS_TO_PROPAGATE)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-secret")
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")

    def trial_env():
        class Trainable:
            pass
        # the options ray.remote recorded for the trial actor class (private: what Tune's cache asked for)
        return class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]

    assert trial_env()["AWS_SECRET_ACCESS_KEY"] == "canary-secret"  # Ray 2.60 does copy it: the reason for the fix
    assert keep_credentials_out_of_trials() >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    env = trial_env()
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["RAY_CHDIR_TO_TRIAL_DIR"] == "0"
    assert keep_credentials_out_of_trials("99.0.0") == frozenset()  # a Ray past the bug is left alone
