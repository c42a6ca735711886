"""Fixtures shared by the evaluation tests of this folder."""

import pytest

from maskgan.config import recipes
from maskgan.design import wearing
from maskgan.run import build, checkpoints


@pytest.fixture(scope="module")
def built(assets):
    """The test assets' models with an untrained generator and two of its universal designs:
    (config, built parts, generator, {'universal/<i>': design [1,3,h,w]})."""
    cfg = recipes.debug_cpu(str(assets))
    parts = build.build(cfg, "cpu")
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128)).eval()
    designs = {f"{wearing.UNIVERSAL}/{i}": d.unsqueeze(0)
               for i, d in enumerate(wearing.universal_designs(gen, cfg.model.latent_dim, k=2, seed=0))}
    return cfg, parts, gen, designs
