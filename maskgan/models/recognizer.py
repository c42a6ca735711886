"""Recogniser: facenet-pytorch InceptionResnetV1, trunk frozen, last 512-unit layer (last_linear + last_bn)
fine-tuned, as in the paper.

facenet_pytorch's package __init__ imports MTCNN, which imports torchvision; the CPU torch wheel has no
matching torchvision on PyPI. `_inception_resnet_v1()` registers the parent package without running its
__init__ (when torchvision is missing) and imports only the model module, which needs torch alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1792
# The smallest side InceptionResnetV1 takes: it downsamples 32x, and below 75 px its last 3x3 convolution has
# no room (torch: "Kernel size can't be greater than actual input size", from every worker).
MIN_INPUT = 75


def _inception_resnet_v1():
    if "facenet_pytorch" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0")
        shim = types.ModuleType("facenet_pytorch")
        shim.__path__ = list(spec.submodule_search_locations)
        shim.__spec__ = spec
        sys.modules["facenet_pytorch"] = shim
    return importlib.import_module("facenet_pytorch.models.inception_resnet_v1").InceptionResnetV1


def facenet_input(x: torch.Tensor) -> torch.Tensor:
    """[0,1] images -> facenet's fixed_image_standardization ((x*255 - 127.5) / 128)."""
    return (x * 255.0 - 127.5) / 128.0


class Trunk(nn.Module):
    """Everything before last_linear: image -> 1792-d features. Frozen, always in eval mode."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # BatchNorm statistics stay fixed: the trunk is not trained
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = facenet_input(x)
        for layer in (n.conv2d_1a, n.conv2d_2a, n.conv2d_2b, n.maxpool_3a, n.conv2d_3b, n.conv2d_4a,
                      n.conv2d_4b, n.repeat_1, n.mixed_6a, n.repeat_2, n.mixed_7a, n.repeat_3, n.block8,
                      n.avgpool_1a):
            x = layer(x)
        return x.flatten(1)


class Head(nn.Module):
    """last_linear + last_bn: 1792-d features -> L2-normalised 512-d embedding. The fine-tuned part.

    While the head trains, BatchNorm uses batch statistics of probes and gallery embedded together (one
    forward), and its running statistics follow the moving weights; identification runs in eval mode on
    those running statistics. (With statistics frozen, shrinking or shifting weights drive every embedding
    to the same direction and the cosine-softmax collapses.)
    """

    def __init__(self, last_linear: nn.Linear, last_bn: nn.BatchNorm1d):
        super().__init__()
        self.last_linear = last_linear
        self.last_bn = last_bn

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.last_bn(self.last_linear(feats)), dim=1)


@torch.no_grad()
def refresh_bn_stats(head: Head, feats: torch.Tensor) -> None:
    """Set the head's BatchNorm running statistics to exactly those of `feats` (cumulative, one pass)."""
    bn = head.last_bn
    momentum, was_training = bn.momentum, head.training
    bn.reset_running_stats()
    bn.momentum = None
    head.train()
    head(feats)
    bn.momentum = momentum
    head.train(was_training)


RANDOM_SEED = 1234  # "random" weights are the same in every process: workers must agree


def build_recognizer(state_dict: dict | None, seed: int = RANDOM_SEED) -> tuple[Trunk, Head]:
    """Trunk and head from a facenet state dict (None: random initialisation from `seed`; another seed gives the
    held-out random trunks of maskgan.embedders)."""
    cls = _inception_resnet_v1()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = cls(pretrained=None, classify=False)
    if state_dict is not None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("logits.")}
        missing, unexpected = net.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"recogniser weights do not fit InceptionResnetV1 (missing: {missing[:3]}, unexpected: {unexpected[:3]})")
    head = Head(net.last_linear, net.last_bn)
    net.last_linear = None  # the head owns these now; the trunk's state dict no longer carries them
    net.last_bn = None
    return Trunk(net), head


def recognizer_state(trunk: Trunk, head: Head) -> dict:
    """The full facenet state dict (trunk + head), loadable by InceptionResnetV1 and by build_recognizer."""
    state = {**trunk.net.state_dict(), **head.state_dict()}
    return {k: v.detach().cpu().clone() for k, v in state.items()}
