"""The headline quotes real pretrained recognisers first, held-out before attacked, and never a random trunk."""

from maskgan.reporting.headline import real_recognisers


def _row(rank1, cos):
    return {"verification": {"rank1": rank1, "mean_cosine": cos}}


def _column(role, uni_rank1):
    rows = {"unmasked": _row(1.0, 0.99), "original_mask": _row(0.5, 0.9), "black": _row(0.4, 0.9),
            "universal": {"designs": 4, "mean": {"rank1": uni_rank1, "mean_cosine": 0.8}}}
    return {"role": role, "splits": {"test": {"rows": rows}}}


def test_real_recognisers_come_first_held_out_before_attacked_and_random_trunks_stay_out():
    report = {"recognizers": {"order": ["attacked", "zoo:expo", "random:7", "zoo:dlib"],
                              "columns": {"attacked": _column("attacked", 0.1), "zoo:expo": _column("attacked", 0.3),
                                          "random:7": _column("held-out", 0.2), "zoo:dlib": _column("held-out", 0.25)}}}
    lines = real_recognisers(report, "test")
    assert lines[0].startswith("  real pretrained recognisers, test")
    assert [ln.split()[0] for ln in lines[1:]] == ["zoo:dlib", "zoo:expo"]
    assert "universal designs 25.0% (cos 0.80)" in lines[1] and "plain mask 50.0%" in lines[1]
    assert not any("random:7" in ln or ln.lstrip().startswith("attacked") for ln in lines)
    assert real_recognisers({"recognizers": {"order": ["random:7"], "columns": {"random:7": _column("held-out", 0)}}},
                            "test") == []
