"""The trunk-feature memo of one evaluation: the defender's second pass over the held-out splits scores exactly
as it would without it, takes its trunk features from it, and other images under the same key are never
answered from it."""

import copy

import numpy as np
import torch

from data_loader import storage
from maskgan.design import wearing
from maskgan.evaluation import validation
from maskgan.evaluation.scorer import Scorer, TrunkMemo

ROWS = ["unmasked", "original_mask", "generated", "noise"]  # generated and noise draw from the pass's seed


def _other_head(head):
    """A head that embeds differently (the defender's is fine-tuned; here its weights are nudged)."""
    other = copy.deepcopy(head)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return other


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for row in a:
        for field in ("label", "pred", "own_sim", "rank"):
            assert np.array_equal(getattr(a[row], field), getattr(b[row], field)), (row, field)


def test_a_second_head_on_the_same_trunk_scores_exactly_as_without_the_memo_and_reuses_its_features(built):
    cfg, parts, gen, designs = built
    designs = {**designs, **wearing.with_physical_controls(designs, "test")}
    rec, root = parts.recognizer, storage.resolve(cfg.data.uri)
    rows = ROWS + list(designs)
    plain = Scorer.of(rec.trunk, rec.head, parts.projector, parts.gallery_feats, "cpu", gen, cfg.model.latent_dim,
                      cfg.physical)
    memo = TrunkMemo(["test"])
    remembering = Scorer.of(rec.trunk, rec.head, parts.projector, parts.gallery_feats, "cpu", gen,
                            cfg.model.latent_dim, cfg.physical, memo=memo)
    first, _ = validation.score_probes(root, "test", rows, remembering, designs=designs, seed=3)
    _same(first, validation.score_probes(root, "test", rows, plain, designs=designs, seed=3)[0])
    assert memo.hits == 0 and memo.kept_bytes > 0

    other = _other_head(rec.head)
    again, imp = validation.score_probes(root, "test", rows, remembering.with_head(other, parts.gallery_feats),
                                         designs=designs, seed=3)
    want, want_imp = validation.score_probes(root, "test", rows, plain.with_head(other, parts.gallery_feats),
                                             designs=designs, seed=3)
    _same(again, want)
    assert np.array_equal(imp, want_imp)
    assert not np.array_equal(again["unmasked"].own_sim, first["unmasked"].own_sim)  # the other head did score
    # every (batch, row) of the first pass was kept, and the second pass took each from the memo
    assert len(memo) >= len(rows) and len(memo) % len(rows) == 0 and memo.hits == len(memo)


def test_other_images_under_a_kept_key_are_embedded_afresh_and_only_named_sets_are_kept():
    calls = []

    def compute(x):
        calls.append(x)
        return x.flatten(1)[:, :4].clone()

    memo = TrunkMemo(["test"], max_bytes=1 << 20)
    a = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(memo.features(("test", 0, "generated"), a, compute), a.flatten(1)[:, :4])
    assert torch.equal(memo.features(("test", 0, "generated"), a.clone(), compute), a.flatten(1)[:, :4])
    assert len(calls) == 1 and memo.hits == 1
    # the same pixels in another place, one pixel changed, another batch size: each is embedded, none answered
    for b in (a.flip(-1), a.clone().index_put_((torch.tensor([1]),), torch.zeros(3, 8, 8)), a[:2]):
        assert torch.equal(memo.features(("test", 0, "generated"), b, compute), b.flatten(1)[:, :4])
    assert len(calls) == 4 and memo.hits == 1
    # the train split is not scored again: nothing of it is kept
    memo.features(("train", 0, "generated"), a, compute)
    memo.features(("train", 0, "generated"), a, compute)
    assert len(calls) == 6
    # past max_bytes nothing more is kept
    small = TrunkMemo(["test"], max_bytes=3 * 4 * 4)
    small.features(("test", 0, "a"), a, compute)
    small.features(("test", 1, "b"), a, compute)
    small.features(("test", 1, "b"), a, compute)
    assert small.kept_bytes == 48 and small.hits == 0
