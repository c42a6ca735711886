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


def _verified(rank1, dodging):
    return {"verification": {"rank1": rank1, "mean_cosine": 0.9, "dodging": {"1e-02": dodging}}, "identities": 16}


def test_the_data_realism_line_gives_each_real_recognisers_unmasked_and_plain_mask_figures():
    """The report says how real recognisers see its own people: unmasked rank-1 and verification, the plain mask's
    rank-1 and dodging, per real recogniser, beside what masks do to real faces; random trunks stay out."""
    from maskgan.reporting.report_matrix import data_realism

    rows = {"unmasked": _verified(1.0, 0.03), "original_mask": _verified(0.5625, 0.875)}
    report = {"fars": ["1e-02", "1e-03"],
              "recognizers": {"order": ["attacked", "zoo:dlib", "random:7"],
                              "columns": {n: {"role": "held-out", "splits": {"test": {"rows": rows}}}
                                          for n in ("attacked", "zoo:dlib", "random:7")}}}
    lines = data_realism(report, "test")
    assert "16 identities" in lines[0] and "5%-60%" in lines[0]
    assert lines[1:] == ["    zoo:dlib rank-1 100.0%, verified 97.0% at FAR 1e-02; plain mask rank-1 56.2%, "
                         "dodging 87.5%"]
    assert data_realism(report, "val") == [] and data_realism({"fars": ["1e-02"]}, "test") == []
