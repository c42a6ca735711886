"""Real pretrained face recognisers, ported to torch from the weight files that registry packages ship.

Every model here is an `nn.Module` built from a converted copy of its package's own weight file (see
`maskgan.models.zoo.fetch`: fetched and checked at install time, converted once into a cache, never downloaded
at run time). Each one knows how its face must be aligned (`Alignment`), so any caller embeds a batch of photos
with `model.embed(images, landmarks68)`: the photos are warped onto the model's template with a differentiable
affine warp (`maskgan.models.zoo.align`), so a generator's gradient flows through alignment into the recogniser.

Conventions shared by every model:
- images: float [N, 3, H, W], RGB in [0, 1] (any H, W);
- landmarks68: float [N, 68, 2], (x, y) pixel coordinates of dlib's iBUG 68-point layout on those images (for a
  photo wearing a mask: the landmarks of its unmasked twin, the same person and pose);
- `forward(aligned)` takes [N, 3, size, size] RGB in [0, 1] already aligned, applies the model's own input
  normalisation, and returns [N, dim] L2-normalised embeddings.
"""

from maskgan.models.zoo.base import ZOO_NAMES, Alignment, Provenance, ZooMissing  # noqa: F401
from maskgan.models.zoo.model import ZooModel  # noqa: F401
