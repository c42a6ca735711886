"""Exporting a checkpoint again evaluates it again only when something its evaluation depends on changed: a finished
export's report.json is reused when its model card names the same checkpoint bytes, code, data and weights, and the
object verifies against the card."""

import json

import pytest

from data_loader import storage
from tune.export_folder import CARD, FORMAT, Inputs, exported_report, sha256

CHECKPOINT = "s3://bucket/runs/t/checkpoint_0002"
STATE_SHA = "a" * 64
INPUTS = Inputs(manifest_sha256="m" * 64, recognizer_sha256="r" * 64, projector_sha256="p" * 64,
                       code="git 1a2b3c4")
REPORT = json.dumps({"checkpoint": CHECKPOINT, "accuracy": {"generated": {"test": 0.25}}}, indent=1).encode()


def _finished_export(folder, report: bytes = REPORT, **card_changes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(report)
    card = {"format": FORMAT,
            "source": {"checkpoint": CHECKPOINT, "state_sha256": STATE_SHA, "report_sha256": sha256(REPORT)},
            "code_version": {"export": INPUTS.code}, "data": {"manifest_sha256": INPUTS.manifest_sha256},
            "recognizer": {"sha256": INPUTS.recognizer_sha256}, "projector": {"sha256": INPUTS.projector_sha256}}
    for dotted, value in card_changes.items():
        section, key = dotted.split("__")
        card[section][key] = value
    (folder / CARD).write_text(json.dumps(card))
    return storage.resolve(str(folder))


def test_a_finished_export_of_the_same_checkpoint_lends_its_report(tmp_path):
    dest = _finished_export(tmp_path / "best")
    assert exported_report(dest, CHECKPOINT, STATE_SHA, INPUTS) == REPORT


@pytest.mark.parametrize("change", [
    {"source__state_sha256": "b" * 64},             # other weights under the same name (a retrained run)
    {"source__checkpoint": CHECKPOINT + "x"},        # another checkpoint
    {"code_version__export": "git 9f8e7d6"},        # another commit evaluated it
    {"data__manifest_sha256": "n" * 64},             # the data changed
    {"recognizer__sha256": "s" * 64},                # the recogniser's weights changed
    {"projector__sha256": "q" * 64},                 # the projector's weights changed
])
def test_anything_the_evaluation_depends_on_changed_means_a_new_evaluation(tmp_path, change):
    dest = _finished_export(tmp_path / "best", **change)
    assert exported_report(dest, CHECKPOINT, STATE_SHA, INPUTS) is None


def test_a_corrupted_report_an_unfinished_export_or_uncommitted_code_is_never_reused(tmp_path):
    flipped = bytearray(REPORT)
    flipped[10] ^= 0x01
    assert exported_report(_finished_export(tmp_path / "a", report=bytes(flipped)), CHECKPOINT, STATE_SHA,
                                  INPUTS) is None
    unfinished = _finished_export(tmp_path / "b")
    (tmp_path / "b" / CARD).unlink()  # an export that died before its card
    assert exported_report(unfinished, CHECKPOINT, STATE_SHA, INPUTS) is None
    dirty = Inputs(**{**INPUTS.__dict__, "code": INPUTS.code + "-dirty"})
    assert exported_report(_finished_export(tmp_path / "c", code_version__export=dirty.code), CHECKPOINT,
                                  STATE_SHA, dirty) is None
    # and the same folder, untouched, is reused: the refusals above are the changes, not the fixture
    assert exported_report(_finished_export(tmp_path / "d"), CHECKPOINT, STATE_SHA, INPUTS) == REPORT
