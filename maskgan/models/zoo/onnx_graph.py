"""A small ONNX-graph interpreter in torch: convert a feed-forward ONNX graph once, run it with torch alone.

Conversion (`from_onnx`, needs the `onnx` package, at install time only) turns an ONNX model into a `GraphSpec`:
its nodes as plain (op, inputs, outputs, attributes) tuples and its constants as tensors. `GraphNet` runs a spec
in torch (NCHW, float32), differentiably. The converters of the tflite and tfjs models build ONNX first too, so one
interpreter runs all three ported recognisers. Only the ops these graphs use are implemented; any other op is one
clear error naming it (at conversion, not at run time).

Rewrites at conversion (`graph_rewrites`): batch norm folded into the convolution before it, TensorFlow's
multi-op PReLU and ReLU6 exports fused into one op each, and a Reshape that hard-codes the export's batch size
freed (-1), so any batch runs.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from maskgan.models.zoo.graph_rewrites import fold_affine_into_conv, free_reshape_batch, fuse_activations
from maskgan.models.zoo.graph_spec import GraphSpec, Node  # noqa: F401  (onnx_graph.GraphSpec: the converters' name)

SUPPORTED_OPS = frozenset({
    "Conv", "BatchNormalization", "PRelu", "Relu", "Clip", "Min", "Max", "Abs", "Add", "Sub", "Mul", "Div",
    "Flatten", "Gemm", "MatMul", "Reshape", "Transpose", "GlobalAveragePool", "ReduceMean", "Sigmoid", "Identity",
})


class UnsupportedOp(ValueError):
    """An ONNX op this interpreter does not implement."""


# ---- conversion (install time) --------------------------------------------------------------------------------

def from_onnx(model, batch_free: bool = True) -> GraphSpec:
    """onnx.ModelProto -> GraphSpec (single input, single output), with BN folded and Reshape batch freed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    nodes = []
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = torch.from_numpy(numpy_helper.to_array(n.attribute[0].t).copy())
            continue
        if n.op_type not in SUPPORTED_OPS:
            raise UnsupportedOp(f"ONNX op {n.op_type} (node {n.name or n.output[0]}) is not implemented in "
                                f"maskgan.models.zoo.onnx_graph")
        attrs = {a.name: _plain(helper.get_attribute_value(a)) for a in n.attribute}
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs))
    inputs = [i.name for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {inputs} and {[o.name for o in graph.output]}")
    spec = GraphSpec(nodes, {k: v.float() if v.is_floating_point() else v for k, v in consts.items()},
                     inputs[0], graph.output[0].name)

    if batch_free:
        free_reshape_batch(spec, _inferred_shapes(model))
    return fuse_activations(fold_affine_into_conv(spec))


def _inferred_shapes(model) -> dict[str, list[int]]:
    """Static output shapes by value name (0 where unknown), from ONNX shape inference."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graph.value_info) + list(graph.output)}


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- run time (torch only) ------------------------------------------------------------------------------------

def _conv(x, w, b, a):
    pads = a.get("pads", [0, 0, 0, 0])
    half = len(pads) // 2
    if pads[:half] == pads[half:]:
        padding = tuple(pads[:half])
    else:  # asymmetric (TensorFlow's SAME with stride 2): pad explicitly; F.pad wants (left, right, top, bottom)
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        padding = 0
    return F.conv2d(x, w, b, tuple(a.get("strides", [1, 1])), padding, tuple(a.get("dilations", [1, 1])),
                    a.get("group", 1))


def _gemm(x, w, b, a):
    x = x.transpose(0, 1) if a.get("transA", 0) else x
    w = w.transpose(0, 1) if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if b is None else y + a.get("beta", 1.0) * b


def _bn(x, g, b, m, v, a):
    return F.batch_norm(x, m, v, g, b, False, 0.0, a.get("epsilon", 1e-5))


def _prelu(x, slope):
    if x.dim() >= 2 and slope.numel() in (1, x.shape[1]) and slope.dim() in (0, 1, x.dim() - 1):
        return F.prelu(x, slope.reshape(-1))  # one fused kernel: ~3x faster than the where() below on CPU
    return torch.where(x >= 0, x, x * slope)  # ONNX PRelu broadcasts slope against the input


def _clip(x, lo=None, hi=None, a=None):
    a = a or {}
    lo = float(lo) if lo is not None else a.get("min")
    hi = float(hi) if hi is not None else a.get("max")
    return torch.clamp(x, lo, hi)


_OPS = {
    "Conv": lambda x, w, b=None, a=None: _conv(x, w, b, a),
    "BatchNormalization": lambda x, g, b, m, v, a: _bn(x, g, b, m, v, a),
    "PRelu": lambda x, s, a: _prelu(x, s),
    "Relu": lambda x, a: F.relu(x),
    "Sigmoid": lambda x, a: torch.sigmoid(x),
    "Identity": lambda x, a: x,
    "Abs": lambda x, a: x.abs(),
    "Add": lambda x, y, a: x + y,
    "Sub": lambda x, y, a: x - y,
    "Mul": lambda x, y, a: x * y,
    "Div": lambda x, y, a: x / y,
    "Min": lambda x, y, a: torch.minimum(x, y),
    "Max": lambda x, y, a: torch.maximum(x, y),
    "Flatten": lambda x, a: x.flatten(a.get("axis", 1)),
    "Gemm": lambda x, w, b=None, a=None: _gemm(x, w, b, a),
    "MatMul": lambda x, y, a: x @ y,
    "Reshape": lambda x, s, a: x.reshape([int(v) for v in s.tolist()]),
    "Transpose": lambda x, a: x.permute(a["perm"]),
    "GlobalAveragePool": lambda x, a: x.mean(dim=(2, 3), keepdim=True),
    "ReduceMean": lambda x, a: x.mean(dim=tuple(a["axes"]), keepdim=bool(a.get("keepdims", 1))),
}


def _clip_op(x, *rest):
    *bounds, a = rest
    return _clip(x, *(bounds + [None] * (2 - len(bounds))), a=a)


_OPS["Clip"] = _clip_op


def _clip_bounds_as_attrs(node: Node, consts: dict[str, torch.Tensor]) -> Node:
    """Clip with constant scalar bounds -> bounds as Python floats (no device read per call on a GPU)."""
    if node.op != "Clip" or not all(i in consts and consts[i].numel() == 1 for i in node.inputs[1:] if i):
        return node
    names = ["min", "max"]
    attrs = {names[k]: float(consts[i]) for k, i in enumerate(node.inputs[1:3]) if i}
    return Node("Clip", node.inputs[:1], list(node.outputs), {**node.attrs, **attrs})


# A weight (kernel entry, bias, PReLU slope) smaller than this is a weight trained to nothing. faceplugin's graph
# holds over 100,000 of them, many subnormal (under 1.2e-38), and they keep whole channels' activations subnormal:
# the CPU then takes its slow path, and 32 faces took 2.1 s on one core instead of 0.5 s with them zeroed. Times an
# activation these nets produce (|x| < 1e4) such a weight adds under 1e-16, below the float32 rounding of the sums
# it joins: the ports still match their references (tests/maskgan/zoo), and 32 random faces' embeddings were
# bit-identical with and without it.
NEGLIGIBLE_WEIGHT = 1e-20
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "PRelu")  # every input after the first is a weight (or bias)


class GraphNet(nn.Module):
    """Runs a GraphSpec in torch. Float constants are frozen Parameters (a caller may unfreeze the last layer)."""

    def __init__(self, spec: GraphSpec):
        super().__init__()
        self.nodes = [_clip_bounds_as_attrs(n, spec.consts) for n in spec.nodes]
        self.input, self.output = spec.input, spec.output
        self.params = nn.ParameterList()
        self._slot: dict[str, int] = {}
        self._ints: dict[str, torch.Tensor] = {}
        used = {i for n in self.nodes for i in n.inputs}
        weights = {i for n in self.nodes if n.op in WEIGHTED_OPS for i in n.inputs[1:]}
        for name, t in spec.consts.items():
            if name not in used:
                continue
            if t.is_floating_point():
                self._slot[name] = len(self.params)
                t = t.float().clone()
                if name in weights:
                    t = torch.where(t.abs() < NEGLIGIBLE_WEIGHT, torch.zeros_like(t), t)
                if t.dim() == 4:  # channels-last kernels and input: less CPU in oneDNN's convolutions
                    t = t.contiguous(memory_format=torch.channels_last)
                self.params.append(nn.Parameter(t, requires_grad=False))
            else:
                self._ints[name] = t
        unknown = sorted({n.op for n in self.nodes} - SUPPORTED_OPS)
        if unknown:
            raise UnsupportedOp(f"ops not implemented in maskgan.models.zoo.onnx_graph: {', '.join(unknown)}")

    def const(self, name: str) -> torch.Tensor:
        return self.params[self._slot[name]] if name in self._slot else self._ints[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x}
        for n in self.nodes:
            args = [None if i == "" else values[i] if i in values else self.const(i) for i in n.inputs]
            values[n.outputs[0]] = _OPS[n.op](*args, n.attrs) if n.op != "Conv" and n.op != "Gemm" \
                else _OPS[n.op](*args, *([None] * (3 - len(args))), a=n.attrs)
        return values[self.output]
