"""The demo's data: enough test identities for its intervals to mean something."""

from data_loader import synth
from maskgan import demo


def test_demo_data_has_at_least_16_test_identities():
    splits = [synth.synth_split(i) for i in range(demo.DEMO_IDENTITIES)]
    assert splits.count("test") >= 16 and splits.count("val") >= 16
    # probes per split stay what the demo's eval reads (eval.max_probes 32)
    assert splits.count("test") * demo.DEMO_PHOTOS == 32
