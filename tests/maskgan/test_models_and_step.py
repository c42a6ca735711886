import copy
import io
import os
import pickle

import pytest
import torch

from maskgan import objective
from maskgan.config import ObjectiveConfig
from maskgan.models import weights
from maskgan.models.generators import build_generator
from maskgan.models.projector import Projector, composite
from maskgan.models.recognizer import build_recognizer


@pytest.mark.parametrize("name", ["fc3", "fc_deep", "conv"])
def test_generators_make_designs(name):
    g = build_generator(name, 100, 32, 128)
    d = g(torch.randn(3, 100))
    assert d.shape == (3, 3, 128, 128) and 0 <= d.min() and d.max() <= 1


def test_unknown_generator():
    with pytest.raises(ValueError, match="unknown generator 'vit'"):
        build_generator("vit", 100, 32, 128)


def test_projector_and_composite():
    p = Projector()
    assert [m.out_channels for m in p.net if isinstance(m, torch.nn.Conv2d)] == [6, 12, 18, 24, 1]
    masked, design = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., 4:, :] = 1
    out = composite(masked, alpha, design)
    assert out[..., 4:, :].eq(1).all() and out[..., :4, :].eq(0).all()


def test_random_recogniser_is_reproducible_and_trunk_frozen():
    t1, h1 = build_recognizer(None)
    t2, h2 = build_recognizer(None)
    assert torch.equal(h1.last_linear.weight, h2.last_linear.weight)
    assert not any(p.requires_grad for p in t1.parameters())
    assert all(p.requires_grad for p in h1.parameters())
    t1.train()
    assert not t1.training  # BatchNorm statistics of the trunk stay fixed


def _models(experiment):
    trunk, head = build_recognizer(None)
    gen = build_generator("fc3", 100, 32, 128)
    cfg = ObjectiveConfig(experiment=experiment)
    opts = objective.Optimizers(torch.optim.Adam(gen.parameters(), lr=1e-2),
                                None if experiment == "exp0" else torch.optim.Adam(head.parameters(), lr=1e-3))
    return objective.Models(gen, trunk, head.eval(), 100), opts, cfg


def _batch(trunk, n=4, identities=6):
    torch.manual_seed(0)
    masked = torch.rand(n, 3, 128, 128)
    b = {"masked": masked, "alpha": torch.zeros(n, 1, 128, 128), "label": torch.arange(n) % identities}
    b["alpha"][..., 64:, :] = 1
    with torch.no_grad():
        b["feats_unmasked"] = trunk(torch.rand(n, 3, 128, 128))
        b["feats_masked"] = trunk(masked)
        gallery = trunk(torch.rand(identities, 3, 128, 128))
    return b, gallery


@pytest.mark.parametrize("experiment", ["exp0", "exp1", "exp2", "exp3"])
def test_step_updates_what_the_experiment_names(experiment):
    models, opts, cfg = _models(experiment)
    batch, gallery = _batch(models.trunk)
    g0 = copy.deepcopy(models.generator.state_dict())
    h0 = copy.deepcopy(models.head.state_dict())
    t0 = copy.deepcopy(models.trunk.state_dict())
    out = objective.train_step(models, opts, batch, gallery, cfg)
    assert all(isinstance(v, float) for v in out.values())
    assert any(not torch.equal(g0[k], v) for k, v in models.generator.state_dict().items())
    assert all(torch.equal(t0[k], v) for k, v in models.trunk.state_dict().items())
    head_changed = not torch.equal(h0["last_linear.weight"], models.head.last_linear.weight)
    assert head_changed == (experiment != "exp0")
    assert not models.head.training


def test_generator_gradient_ascends_cross_entropy():
    """The generator's update must raise the recogniser's loss on its faces, not lower it."""
    models, opts, cfg = _models("exp0")
    batch, gallery = _batch(models.trunk)
    torch.manual_seed(1)
    before = [objective.train_step(models, opts, batch, gallery, cfg)["train/gen_ce"] for _ in range(6)]
    assert before[-1] > before[0]


def test_weights_errors_name_the_file(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(weights.WeightsError, match="unreadable recogniser weights file .*junk.pt"):
        weights.recognizer_state(str(bad))
    with pytest.raises(weights.WeightsError, match="missing.pt: not found"):
        weights.recognizer_state(str(tmp_path / "missing.pt"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/maskgan-pwned",))


def test_code_in_a_weights_file_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/maskgan-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    p = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"state_dict": _Evil()}, buf, pickle_module=pickle)
    p.write_bytes(buf.getvalue())
    with pytest.raises(weights.WeightsError, match="evil.pt"):
        weights.load_torch(str(p))
    assert not os.path.exists(marker)
