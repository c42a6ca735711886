"""PBT on the shared Ray session: the trial with ci.yaml's planted collapsed recogniser (below the guard) is
replaced by a clone of the healthy trial's checkpoint with resampled/perturbed rates, and trains on from there instead of from scratch.

2 trials x 6 epochs (EPOCHS), both running at once (no pauses for pending trials); about 80 s on 2 CPUs alone.
"""

import json

import pytest

from data_loader import storage
from maskgan.run import checkpoints
from tune import sweep, trial

pytestmark = pytest.mark.slow

# Tune registers a trial's reported checkpoint a report or two after it (the sweep log says "no checkpoint for
# trial ... Skip exploit" until then), so 4 epochs sometimes left the first exploit for the very last one, with no
# training after the clone to check; 6 leave room for it.
EPOCHS = 6


@pytest.fixture(scope="module")
def pbt_sweep(ray_session, make_space, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pbt")
    space = make_space(tmp / "pbt.yaml", name="pbt", grid={"model.recognizer_weights": ["healthy", "collapsed"]},
                       pbt={"perturbation_interval": 1, "mutations": {"objective.head_lr": [1.0e-5, 1.0e-3],
                                                                      "objective.g_lr": [1.0e-3, 1.0e-1]},
                            # the collapse (objective 1.0) is replaced; healthy trials a few probes apart do not
                            # clone each other back and forth (1 to 4 restarts of 20-25 s each without it)
                            "min_improvement": 0.25})
    # ci.yaml's base trains 3 epochs; more leave room for an exploit before the healthy trial finishes
    import yaml

    data = yaml.safe_load(open(space))
    data["base"]["train"]["epochs"] = EPOCHS
    # every checkpoint kept: the epoch trained right after a clone (Ray Train keeps num_to_keep of its own; the
    # clone it does not manage) must still be there after the epochs that follow it
    data["base"]["train"]["num_to_keep"] = EPOCHS
    yaml.safe_dump(data, open(space, "w"), sort_keys=False)
    lines = []
    result = sweep.run(space, storage_uri=str(tmp / "sweeps"), scheduler="pbt", log=lines.append)
    return {"result": result, "dir": tmp / "sweeps" / "pbt", "log": lines}


def _state(loc):
    return checkpoints.read_checkpoint(loc)


def test_pbt_clones_the_healthy_trial_into_the_collapsed_one(pbt_sweep):
    rows = {r["trial"]: r for r in pbt_sweep["result"]["rows"]}
    assert len(rows) == 2
    cloned = [r for r in rows.values() if r["pbt_from"]]
    assert cloned, f"PBT never exploited: {rows}"
    for row in cloned:
        donor = row["pbt_from"].split(";")[-1].strip().split("@")[0]
        assert donor in rows and donor != row["trial"]
        run = storage.resolve(row["run"])
        lineage = json.loads(storage.read_text(run.join(trial.LINEAGE)))
        listed = dict(checkpoints.list_checkpoints(run))
        epochs = sorted(listed)
        assert max(epochs) == EPOCHS - 1 and row["epochs"] == EPOCHS
        # With two trials PBT may exploit at every report but the last: what is checked is the last clone this
        # trial then trained an epoch from.
        def _name(epoch):
            return listed[epoch].uri.rstrip("/").rsplit("/", 1)[-1]

        trained_on = [int(c["epoch"]) for c in lineage if int(c["epoch"]) + 1 in listed
                      and not _name(int(c["epoch"]) + 1).startswith(trial.CLONE_PREFIX)]
        assert trained_on, f"no epoch was trained from any clone: lineage {lineage}, checkpoints {epochs}"
        # ... and never at the trial's last epoch (tune/schedulers.py leaves that report alone)
        assert all(int(c["epoch"]) < EPOCHS - 1 for c in lineage), lineage
        clone_epoch = trained_on[-1]
        # the clone is a checkpoint of this trial's run, and training went on from it, not from scratch
        assert clone_epoch in epochs
        clone = listed[clone_epoch]
        assert _name(clone_epoch) == f"{trial.CLONE_PREFIX}{clone_epoch:04d}"
        # the rates it trained on after the clone are its own (mutated) config's, not the donor's saved ones
        after = _state(listed[clone_epoch + 1])
        cfg = after["config"]["objective"]
        assert after["g_opt"]["param_groups"][0]["lr"] == pytest.approx(cfg["g_lr"])
        assert after["h_opt"]["param_groups"][0]["lr"] == pytest.approx(cfg["head_lr"])
        # the table's rate is what the trial's last checkpoint trained with
        final = _state(checkpoints.latest_checkpoint(run)[1])
        assert row["objective.head_lr"] == pytest.approx(final["config"]["objective"]["head_lr"])
        # Adam's step count went on from the donor's: the optimiser state came with the weights
        assert float(after["g_opt"]["state"][0]["step"]) > float(_state(clone)["g_opt"]["state"][0]["step"])
    def collapsed(r):
        return r["model.recognizer_weights"].endswith("recognizer_collapsed.pt")

    # the collapsed trial ends with the healthy trial's head and config: it was the one PBT replaced
    assert not [r for r in rows.values() if r["trial"] not in {c["trial"] for c in cloned} and collapsed(r)], rows
    assert not [r for r in rows.values() if collapsed(r)], rows
    assert all(r["guard_ok"] is True for r in rows.values()), rows


def test_pbt_results_table_names_the_clone(pbt_sweep):
    md = (pbt_sweep["dir"] / "results.md").read_text()
    assert "cloned from (PBT)" in md and "objective.g_lr" in md
    csv_text = (pbt_sweep["dir"] / "results.csv").read_text()
    assert "pbt_from" in csv_text.splitlines()[0]
