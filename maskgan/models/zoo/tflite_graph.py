"""TensorFlow Lite flatbuffer -> ONNX (NCHW), at conversion time only (needs the `tflite` and `onnx` packages).

The result runs through the one interpreter of `maskgan.models.zoo.onnx_graph`, so the tflite model needs only
torch at run time. Layout: TFLite tensors are NHWC; the ONNX graph built here is NCHW throughout (conv kernels are
transposed, per-channel constants become [C, 1, 1], a Reshape sees its input transposed back to NHWC first so
the flattening order is TFLite's). TensorFlow's SAME padding is computed per layer from the static shapes (it is
asymmetric for stride 2). Only the float32 ops MobileFaceNet uses are implemented; any other is one error naming it.
"""
from __future__ import annotations

import numpy as np


class _Reader:
    """Tensors, constants and op names of subgraph 0 of a .tflite flatbuffer."""

    def __init__(self, data: bytes):
        import tflite

        self.t = tflite
        self.model = tflite.Model.GetRootAsModel(data, 0)
        self.graph = self.model.Subgraphs(0)
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        codes = [self.model.OperatorCodes(i) for i in range(self.model.OperatorCodesLength())]
        self.opnames = [names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())] for c in codes]

    def name(self, i: int) -> str:
        return self.graph.Tensors(i).Name().decode()

    def shape(self, i: int) -> list[int]:
        return [int(v) for v in self.graph.Tensors(i).ShapeAsNumpy()]

    def const(self, i: int) -> np.ndarray | None:
        tensor = self.graph.Tensors(i)
        buf = self.model.Buffers(tensor.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        dtype = {self.t.TensorType.FLOAT32: np.float32, self.t.TensorType.INT32: np.int32}.get(tensor.Type())
        if dtype is None:
            raise ValueError(f"tflite tensor {self.name(i)}: type {tensor.Type()} is not supported (float32 only)")
        return np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=dtype).reshape(self.shape(i))

    def options(self, op, cls):
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts


def _same_pads(in_hw, kernel_hw, stride_hw, dil_hw):
    """TensorFlow SAME: total padding split with the extra pixel at the bottom/right. ONNX order [t, l, b, r]."""
    before, after = [], []
    for size, k, s, d in zip(in_hw, kernel_hw, stride_hw, dil_hw):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


class _Builder:
    def __init__(self, reader: _Reader):
        self.r = reader
        self.nodes, self.inits, self.count = [], {}, 0

    def init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def node(self, op, inputs, output, **attrs):
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output

    def operand(self, i: int) -> str:
        """A tensor as an ONNX input: activations by name; constants converted to the NCHW broadcast layout."""
        value = self.r.const(i)
        name = self.r.name(i)
        if value is None:
            return name
        if value.ndim == 1 and value.size > 1:  # per-channel vector: broadcast over NCHW channels
            value = value.reshape(-1, 1, 1)
        elif value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        return self.init(name, value.astype(np.float32))

    def activation(self, out: str, fused: int) -> str:
        act = self.r.t.ActivationFunctionType
        if fused == act.NONE:
            return out
        pre = out + ":pre_activation"
        self.nodes[-1].output[0] = pre
        if fused == act.RELU:
            return self.node("Relu", [pre], out)
        if fused == act.RELU6:
            return self.node("Clip", [pre, self.init(out + ":lo", np.float32(0)), self.init(out + ":hi", np.float32(6))], out)
        raise ValueError(f"tflite fused activation {fused} is not supported")

    def conv(self, op, depthwise: bool):
        t, r = self.r.t, self.r
        x, w, b = (op.Inputs(k) for k in range(3))
        opts = r.options(op, t.DepthwiseConv2DOptions if depthwise else t.Conv2DOptions)
        weight = r.const(w)
        kernel = weight.shape[1:3]
        strides, dil = [opts.StrideH(), opts.StrideW()], [opts.DilationHFactor(), opts.DilationWFactor()]
        if depthwise:
            weight, group = weight.transpose(3, 0, 1, 2), r.shape(x)[3]
        else:
            weight, group = weight.transpose(0, 3, 1, 2), 1
        pads = _same_pads(r.shape(x)[1:3], kernel, strides, dil) if opts.Padding() == t.Padding.SAME else [0] * 4
        out = r.name(op.Outputs(0))
        self.node("Conv", [r.name(x), self.init(r.name(w), weight), self.init(r.name(b), r.const(b))], out,
                  strides=strides, dilations=dil, pads=pads, group=group, kernel_shape=list(kernel))
        self.activation(out, opts.FusedActivationFunction())

    def elementwise(self, op, onnx_op: str, options_cls):
        inputs = [self.operand(op.Inputs(k)) for k in range(op.InputsLength())]
        out = self.node(onnx_op, inputs, self.r.name(op.Outputs(0)))
        if options_cls is not None and op.BuiltinOptions() is not None:
            self.activation(out, self.r.options(op, options_cls).FusedActivationFunction())

    def reshape(self, op):
        r = self.r
        x, out = r.name(op.Inputs(0)), r.name(op.Outputs(0))
        target = r.const(op.Inputs(1)) if op.InputsLength() > 1 else np.array(r.shape(op.Outputs(0)))
        nhwc = self.node("Transpose", [x], x + ":nhwc", perm=[0, 2, 3, 1])
        self.node("Reshape", [nhwc, self.init(out + ":shape", target.astype(np.int64))], out)


def tflite_to_onnx(data: bytes):
    """The bytes of a .tflite file -> onnx.ModelProto with one NCHW input and the model's one output."""
    from onnx import TensorProto, helper

    r = _Reader(data)
    t, b = r.t, _Builder(r)
    g = r.graph
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        kind = r.opnames[op.OpcodeIndex()]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            b.conv(op, kind == "DEPTHWISE_CONV_2D")
        elif kind in ("ADD", "SUB", "MUL"):
            cls = {"ADD": t.AddOptions, "SUB": t.SubOptions, "MUL": t.MulOptions}[kind]
            b.elementwise(op, kind.title(), cls)
        elif kind in ("RELU", "ABS"):
            b.elementwise(op, kind.title(), None)
        elif kind == "RESHAPE":
            b.reshape(op)
        else:
            raise ValueError(f"tflite op {kind} (operator {k}) is not supported by maskgan.models.zoo.tflite_graph")
    (inp,), (out,) = g.InputsAsNumpy(), g.OutputsAsNumpy()
    n, h, w, c = r.shape(inp)
    graph = helper.make_graph(
        b.nodes, "tflite", [helper.make_tensor_value_info(r.name(inp), TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info(r.name(out), TensorProto.FLOAT, r.shape(out))], list(b.inits.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
