"""Design diversity, checked on planted generators and a stub embedder whose answers are known."""

import math

import pytest
import torch
from torch import nn

from maskgan.design import diversity, physical, wearing
from maskgan.evaluation import evaluate
from maskgan.reporting import report

H, W, LATENT = 4, 8, 3 * 4 * 8  # a non-square design: the measures must not assume [S, S]


class Constant(nn.Module):
    """A fully collapsed generator: every latent gives the same design."""

    def __init__(self):
        super().__init__()
        self.design = nn.Parameter(torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)))

    def forward(self, z):
        return self.design.expand(z.shape[0], -1, -1, -1)


class Copy(nn.Module):
    """Copies its latent into the pixels, scaled by `gain`: diversity grows with the gain."""

    def __init__(self, gain):
        super().__init__()
        self.gain = gain

    def forward(self, z):
        return (0.5 + self.gain * z).view(-1, 3, H, W)


def test_pixel_diversity_is_zero_for_a_constant_generator_and_grows_with_one_that_copies_its_latent():
    assert diversity.pixel_diversity(wearing.universal_designs(Constant(), LATENT, k=8)) == 0.0
    figures = [diversity.pixel_diversity(wearing.universal_designs(Copy(g), LATENT, k=8)) for g in (0.01, 0.05, 0.2)]
    assert 0 < figures[0] < figures[1] < figures[2]
    # an exact case: two designs, one all 0 and one all 1, differ by 1 everywhere
    assert diversity.pixel_diversity(torch.stack([torch.zeros(3, H, W), torch.ones(3, H, W)])) == 1.0
    assert math.isnan(diversity.pixel_diversity(torch.zeros(1, 3, H, W)))  # one design: no pair, no figure


def test_mode_seeking_loss_falls_as_designs_spread_and_is_one_over_lz():
    z = torch.randn(8, LATENT, generator=torch.Generator().manual_seed(1))
    losses = [diversity.mode_seeking(Copy(g)(z), z)[0].item() for g in (0.0, 0.01, 0.1, 1.0)]  # the step's term
    assert losses[0] == pytest.approx(1 / diversity.EPS)  # collapsed: lz = 0
    assert losses[0] > losses[1] > losses[2] > losses[3]
    # designs = 0.5 + z exactly: image distance equals latent distance, lz = 1
    loss, lz = diversity.mode_seeking(Copy(1.0)(z), z)
    assert lz.item() == pytest.approx(1.0) and loss.item() == pytest.approx(1 / (1 + diversity.EPS))
    # the term pushes designs apart: a few steps on it alone raise a collapsed generator's diversity
    gen = nn.Sequential(nn.Linear(LATENT, 3 * H * W), nn.Unflatten(1, (3, H, W)))
    nn.init.zeros_(gen[0].weight)
    with torch.no_grad():
        gen[0].weight.add_(1e-3 * torch.randn(gen[0].weight.shape, generator=torch.Generator().manual_seed(2)))
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    before = diversity.pixel_diversity(gen(z))
    for _ in range(5):
        opt.zero_grad()
        diversity.mode_seeking(gen(z), z)[0].backward()
        opt.step()
    assert diversity.pixel_diversity(gen(z)) > 3 * before
    with pytest.raises(ValueError):
        diversity.mode_seeking(Copy(1.0)(z[:1]), z[:1])


# Planted: probe p wearing design k embeds as the one-hot of identity PLANT[p][k] (read back from the pixels
# evaluation's own compositing writes), so the counts and cosine distances are known exactly.
PLANT = [[0, 0, 0, 0], [1, 2, 1, 2], [3, 4, 5, 6]]
IDENTITIES = 7


def _planted():
    probes, k = len(PLANT), len(PLANT[0])
    # grey photos (p + 1) / 10: flat shading 1, so a flat design is worn at exactly its colour
    masked = (torch.arange(probes, dtype=torch.float32).view(-1, 1, 1, 1).expand(probes, 3, H, W) + 1) / 10
    alpha = torch.zeros(probes, 1, H, W)
    alpha[..., W // 2:] = 1  # the design's half of the face
    alpha = physical.mask_warp(alpha)
    designs = torch.arange(k, dtype=torch.float32).view(-1, 1, 1, 1).expand(k, 3, H, W) / 10

    def embed(faces):
        p, d = (faces[:, 0, 0, 0] * 10).round().long() - 1, (faces[:, 0, 0, -1] * 10).round().long()
        ident = torch.tensor([PLANT[i][j] for i, j in zip(p.tolist(), d.tolist())])
        return nn.functional.one_hot(ident, IDENTITIES).float()

    return designs, masked, alpha, embed, torch.eye(IDENTITIES)


def test_distinct_identities_and_feature_diversity_on_a_planted_case():
    designs, masked, alpha, embed, gallery = _planted()
    ids = diversity.distinct_identities(designs, masked, alpha, embed, wearing.worn, gallery)
    assert ids == {"mean": pytest.approx(7 / 3), "max": 4}  # 1, 2 and 4 identities
    # cosine distance 1 between differing one-hots: probe 0 has 0/6 differing pairs, probe 1 4/6, probe 2 6/6
    feat = diversity.feature_diversity(designs, masked, alpha, embed, wearing.worn)
    assert feat == pytest.approx((0 + 4 / 6 + 1) / 3)
    m = diversity.measure(designs, masked, alpha, embed, wearing.worn, gallery)
    assert m["feature"] == pytest.approx(feat) and m["distinct_identities"] == ids
    assert (m["designs"], m["probes"]) == (4, 3) and m["pixel"] == pytest.approx(0.5 / 3)  # |i-j|/10 over pairs


def test_protection_spread_is_max_minus_min_over_designs():
    spread = diversity.protection_spread([{"dodging@1e-02": 0.2, "rank1": 0.4}, {"dodging@1e-02": 0.9, "rank1": 0.1},
                                          {"dodging@1e-02": 0.5, "rank1": float("nan")}])
    assert spread == {"dodging@1e-02": pytest.approx(0.7), "rank1": pytest.approx(0.3)}


def test_evaluation_measures_the_universal_designs_diversity_and_report_md_shows_it(assets):
    from data_loader import storage
    from maskgan.config import recipes
    from maskgan.evaluation.scorer import Scorer
    from maskgan.run import build, checkpoints

    cfg = recipes.debug_cpu(str(assets))
    parts = build.build(cfg, "cpu")
    with torch.no_grad():
        gallery_emb = parts.recognizer.head(parts.gallery_feats)
    torch.manual_seed(0)
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128)).eval()
    scorer = Scorer(parts.recognizer.trunk, parts.recognizer.head, parts.projector, gallery_emb, "cpu", gen,
                    cfg.model.latent_dim)
    root = storage.resolve(cfg.data.uri)
    fixed = wearing.universal_designs(gen, cfg.model.latent_dim, k=3)
    got = evaluate.split_diversity(root, "test", fixed, scorer, probes=4)
    assert (got["designs"], got["probes"]) == (3, 4)
    assert got["pixel"] > 0 and 0 < got["feature"] <= 2 and 1 <= got["distinct_identities"]["mean"] <= 3
    same = evaluate.split_diversity(root, "test", fixed[:1].expand(3, -1, -1, -1), scorer, probes=4)
    assert same["pixel"] == 0 and same["feature"] == pytest.approx(0, abs=1e-6)
    assert same["distinct_identities"] == {"mean": 1.0, "max": 1}

    rep = {"experiment": "exp1", "generator": "fc3", "epoch": 0, "illustrative_only": False, "gallery_size": 24,
           "chance": 1 / 24, "accuracy": {}, "rows": {}, "impostors": {}, "fars": ["1e-02", "1e-03"],
           "diversity": {"test": {**got, "protection_spread": {"dodging@1e-02": 0.25, "rank1": 0.125}}}}
    md = report.report_markdown(rep)
    assert "## Diversity of the universal designs" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| test | 3 × 4 |"))
    assert f"| {got['pixel']:.3f} | {got['feature']:.3f} |" in line and line.endswith("| 25.0% | 12.5% |")
