"""Recogniser: facenet-pytorch InceptionResnetV1, trunk frozen, last 512-unit layer (last_linear + last_bn)
fine-tuned, as in the paper. `CompactNet` is the other trunk a recogniser can have (weights `random-compact`): the
same 1792-d features and head at a fraction of the arithmetic, for smoke runs and the test suite.

facenet_pytorch's package __init__ imports MTCNN, which imports torchvision; the CPU torch wheel has no
matching torchvision on PyPI. `_inception_resnet_v1()` registers the parent package without running its
__init__ (when torchvision is missing) and imports only the model module, which needs torch alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1792
# The smallest side InceptionResnetV1 takes: it downsamples 32x, and below 75 px its last 3x3 convolution has
# no room (torch: "Kernel size can't be greater than actual input size", from every worker).
MIN_INPUT = 75
FACE_SIDE = 160  # facenet's pretrained weights were trained on 160 x 160 face crops
# The margin facenet's training crops keep around the MTCNN box: 32 px at 160 in facenet's training scripts,
# i.e. 10 % of the box side on every side (data.face_crop).
FACE_MARGIN = 0.1


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


def crop_box(face_box: tuple[float, float, float, float], size: int) -> tuple[int, int, int, int]:
    """A face box (fractions of the image) -> the pixel rows/columns (y0, y1, x0, x1) facenet's crop takes:
    the box widened by FACE_MARGIN of its side on every side, clipped to the image."""
    x0, y0, x1, y1 = face_box
    mx, my = FACE_MARGIN * (x1 - x0), FACE_MARGIN * (y1 - y0)

    def px(v: float) -> int:
        return min(max(int(round(v * size)), 0), size)

    return px(y0 - my), max(px(y1 + my), px(y0 - my) + 1), px(x0 - mx), max(px(x1 + mx), px(x0 - mx) + 1)


def crop_to_face(x: torch.Tensor, face_box: tuple[float, float, float, float]) -> torch.Tensor:
    """[B,3,S,S] -> [B,3,160,160]: the face crop pretrained facenet weights expect, resized bilinearly (a
    differentiable view and interpolation: the generator's gradient passes through it)."""
    y0, y1, x0, x1 = crop_box(face_box, x.shape[-1])
    return F.interpolate(x[:, :, y0:y1, x0:x1], size=(FACE_SIDE, FACE_SIDE), mode="bilinear", align_corners=False)


class CompactNet(nn.Module):
    """A small convolutional trunk with facenet's interface: five stride-2 3 x 3 convolutions (32 to 448 channels,
    BatchNorm, ReLU), average-pooled to 2 x 2 and flattened (448 x 4 = FEATURE_DIM), then facenet's last_linear +
    last_bn. About 77 M multiply-adds a 128 px photo against facenet's 810 M: a training step on a CPU is several
    times faster. Pooled to 2 x 2, not to one value a channel: on the tests' synthetic people a global pool left
    half the unmasked probes unrecognised. Randomly initialised it is no face recogniser; adapted (`maskgan
    recognizer adapt`) it is a mask-aware stand-in, as `random` is, but a weaker one (docs/testing.md)."""

    WIDTHS = (3, 32, 64, 128, 256, 448)

    def __init__(self):
        super().__init__()
        layers = []
        for cin, cout in zip(self.WIDTHS, self.WIDTHS[1:]):
            conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # keeps the activations' scale layer to layer
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2))
        self.last_linear = nn.Linear(FEATURE_DIM, 512, bias=False)  # facenet's head, shape for shape
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1, affine=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _facenet_features(n: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for layer in (n.conv2d_1a, n.conv2d_2a, n.conv2d_2b, n.maxpool_3a, n.conv2d_3b, n.conv2d_4a,
                  n.conv2d_4b, n.repeat_1, n.mixed_6a, n.repeat_2, n.mixed_7a, n.repeat_3, n.block8,
                  n.avgpool_1a):
        x = layer(x)
    return x


ARCHITECTURES = ("facenet", "compact")  # maskgan.config.RANDOM_WEIGHTS names a random initialisation of each


def architecture(state_dict: dict) -> str:
    """Which trunk a recogniser state dict is for: CompactNet's keys start with `body.`, facenet's never do."""
    return "compact" if any(k.startswith("body.") for k in state_dict) else "facenet"


class Trunk(nn.Module):
    """Everything before last_linear: image -> 1792-d features. Frozen, always in eval mode.

    `face_box` (data.face_crop, set by maskgan.run.checkpoints): when set, every input is first cropped to that face box
    (fractions of the image) and resized to 160 x 160 (`crop_to_face`), so every caller (gallery, per-image
    constants, the step, evaluation) sees the same crop; None: the whole photo, as prepared."""

    def __init__(self, net: nn.Module, face_box: tuple[float, float, float, float] | None = None):
        super().__init__()
        self.net = net
        self.face_box = face_box  # an attribute, not a buffer: the weights' state dict and sha256 stay the same
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # BatchNorm statistics stay fixed: the trunk is not trained
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        if self.face_box is not None:
            x = crop_to_face(x, self.face_box)
        x = facenet_input(x)
        x = n.features(x) if isinstance(n, CompactNet) else _facenet_features(n, x)
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


@dataclass
class Surrogate:
    """One extra white-box recogniser the generator attacks (config `model.recognizers`): its own frozen trunk,
    its own head (trained as the experiment says) and its own trunk's features of the gallery. The one shape
    for it: maskgan.run.build makes one per spec (the whole gallery's features); the worker hands the step a
    copy with the head wrapped for DDP and the train identities' rows only."""

    spec: str  # its model.recognizers spec
    trunk: nn.Module  # frozen (possibly compiled for the step)
    head: nn.Module  # possibly DDP-wrapped
    gallery_feats: torch.Tensor  # [identities, 1792] (a zoo trunk: its own width), in label order


RANDOM_SEED = 1234  # "random" weights are the same in every process: workers must agree


def build_recognizer(state_dict: dict | None, seed: int = RANDOM_SEED, arch: str = "facenet") -> tuple[Trunk, Head]:
    """Trunk and head from a recogniser state dict, whose keys say its architecture (None: `arch` randomly
    initialised from `seed`; another seed gives the held-out random trunks of maskgan.evaluation.embedders)."""
    if state_dict is not None:
        arch = architecture(state_dict)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown recogniser architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CompactNet() if arch == "compact" else _inception_resnet_v1()(pretrained=None, classify=False)
    if state_dict is not None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("logits.")}
        missing, unexpected = net.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            name = "the compact trunk" if arch == "compact" else "InceptionResnetV1"
            raise ValueError(
                f"recogniser weights do not fit {name} (missing: {missing[:3]}, unexpected: {unexpected[:3]})")
    head = Head(net.last_linear, net.last_bn)
    net.last_linear = None  # the head owns these now; the trunk's state dict no longer carries them
    net.last_bn = None
    return Trunk(net), head


def recognizer_state(trunk: Trunk, head: Head) -> dict:
    """The full state dict (trunk + head), loadable by build_recognizer (a facenet one by InceptionResnetV1 too)."""
    state = {**trunk.net.state_dict(), **head.state_dict()}
    return {k: v.detach().cpu().clone() for k, v in state.items()}
