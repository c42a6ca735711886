"""The ONNX-graph interpreter on small synthetic graphs, against onnxruntime: every op the ports use, the rewrites
made at conversion (batch-norm folding, batch-free Reshape, TensorFlow's PReLU and ReLU6 chains fused), and the one
clear error for an op it does not implement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from maskgan.models.zoo.onnx_graph import (  # noqa: E402
    NEGLIGIBLE_WEIGHT, GraphNet, GraphSpec, UnsupportedOp, from_onnx)

RNG = np.random.default_rng(0)


def _const(name, *shape, positive=False):
    v = RNG.uniform(0.5, 1.5, shape) if positive else RNG.normal(0, 0.5, shape)
    return numpy_helper.from_array(v.astype(np.float32), name)


def _model(nodes, inits, out_shape):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _tf_style_model():
    """Conv+BN, PReLU, a stride-2 conv with TensorFlow's asymmetric SAME pads, BN as Mul/Add, TF's PReLU export
    relu(x) + k(x - |x|), a ReLU6 chain, depthwise conv, global pooling and a Reshape hard-coding batch 1."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"], epsilon=1e-3),
        n("PRelu", ["bn", "slope"], ["p"]),
        n("Conv", ["p", "w2"], ["c2"], pads=[0, 0, 1, 1], strides=[2, 2], kernel_shape=[3, 3]),
        n("Mul", ["c2", "scale"], ["m"]), n("Add", ["m", "shift"], ["a"]),
        n("Relu", ["a"], ["r"]), n("Abs", ["a"], ["ab"]), n("Sub", ["a", "ab"], ["s"]), n("Mul", ["k", "s"], ["ks"]),
        n("Add", ["r", "ks"], ["tfp"]),
        n("Conv", ["tfp", "wd"], ["dw"], group=4, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("Relu", ["dw"], ["r6"]), n("Min", ["r6", "six"], ["mn"]), n("Max", ["mn", "zero"], ["mx"]),
        n("GlobalAveragePool", ["mx"], ["gap"]),
        n("Reshape", ["gap", "shape"], ["y"]),
    ]
    inits = [_const("w1", 4, 3, 3, 3), _const("b1", 4), _const("g", 4, positive=True), _const("beta", 4),
             _const("mean", 4), _const("var", 4, positive=True), _const("slope", 4, 1, 1), _const("w2", 4, 4, 3, 3),
             _const("scale", 4, 1, 1, positive=True), _const("shift", 4, 1, 1), _const("k", 4, 1, 1),
             _const("wd", 4, 1, 3, 3), numpy_helper.from_array(np.float32(6), "six"),
             numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    return _model(nodes, inits, [1, 4])


def test_matches_onnxruntime_at_any_batch_after_folding_and_fusing():
    model = _tf_style_model()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.normal(0, 1, (3, 3, 9, 9)).astype(np.float32)
    want = np.concatenate([sess.run(None, {"x": x[k:k + 1]})[0] for k in range(3)])  # the graph's batch is 1
    spec = from_onnx(model)
    ops = [node.op for node in spec.nodes]
    assert "BatchNormalization" not in ops and "Abs" not in ops and "Min" not in ops  # folded and fused
    assert ops.count("PRelu") == 2 and ops.count("Clip") == 1 and ops.count("Add") == 0
    with torch.no_grad():
        got = GraphNet(GraphSpec.from_state(spec.to_state()))(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 4)
    assert np.abs(got - want).max() < 1e-5


def test_weights_trained_to_nothing_are_zeroed_and_the_output_is_unchanged():
    """Kernel entries, biases and PReLU slopes under NEGLIGIBLE_WEIGHT (subnormal ones too: faceplugin has over
    100,000, which put the CPU on its slow subnormal path) become exact zeros; onnxruntime, on the untouched
    weights, gives the same output; a small constant that is not a weight (an epsilon) is kept."""
    n = helper.make_node
    w = RNG.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    w[0, 0] = 1e-39  # subnormal
    w[1, 1, 1, 1] = -3e-25
    b = np.array([0.1, 1e-40, -2e-30, 0.3], np.float32)
    slope = np.array([0.25, 1e-41, 4e-36, -0.1], np.float32).reshape(4, 1, 1)
    nodes = [n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             n("PRelu", ["c", "slope"], ["p"]), n("Add", ["p", "eps"], ["e"]), n("GlobalAveragePool", ["e"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(slope, "slope"),
             numpy_helper.from_array(np.float32(1e-30), "eps")]
    model = _model(nodes, inits, [1, 4, 1, 1])
    net = GraphNet(from_onnx(model))
    tiny = [(name, v) for name, v in (("w", net.const("w")), ("b", net.const("b")), ("slope", net.const("slope")))
            if ((v != 0) & (v.abs() < NEGLIGIBLE_WEIGHT)).any()]
    assert not tiny, tiny
    assert (net.const("w") == 0).sum() == 9 + 1 and (net.const("b") == 0).sum() == 2
    assert (net.const("slope") == 0).sum() == 2 and net.const("slope").flatten()[0] == 0.25
    assert net.const("eps").item() == np.float32(1e-30)  # not a weight: kept
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.normal(0, 1, (1, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - sess.run(None, {"x": x})[0]).max() < 1e-6


def test_gradient_reaches_the_input():
    net = GraphNet(from_onnx(_tf_style_model()))
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    net(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())  # frozen unless a caller unfreezes a layer


def test_unknown_op_is_one_error_naming_it():
    n = helper.make_node
    model = _model([n("Softmax", ["x"], ["s"]), n("GlobalAveragePool", ["s"], ["y"])], [], [1, 3, 1, 1])
    with pytest.raises(UnsupportedOp, match="ONNX op Softmax"):
        from_onnx(model)
