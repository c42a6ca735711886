"""TensorFlow.js graph model (model.json + weight shards) -> ONNX (NCHW), at conversion time only (needs `onnx`).

Neither TensorFlow nor node is needed: the weights manifest is read as plain bytes (float32, int32, or float16 as
tfjs's converter quantises them), and the graph's nodes are translated one by one into the ops of
`maskgan.models.zoo.onnx_graph`, which then runs them in torch. Only the nodes the requested output depends on are
translated (HSE faceres also carries age and gender heads). Layout: tfjs is NHWC; the ONNX graph is NCHW throughout.
Only the ops MobileNet-style graphs use are implemented; any other is one error naming it.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

_DTYPES = {"float32": np.float32, "int32": np.int32}


def read_weights(manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Decode a tfjs weights manifest: each group's shards are concatenated, weights follow in order."""
    out = {}
    for group in manifest:
        data = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            count = int(np.prod(w["shape"], dtype=np.int64))
            quant = w.get("quantization")
            if quant is None:
                dtype = np.dtype(_DTYPES[w["dtype"]])
            elif quant["dtype"] == "float16":
                dtype = np.dtype(np.float16)
            else:
                raise ValueError(f"tfjs weight {w['name']}: quantisation {quant['dtype']} is not supported")
            raw = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
            out[w["name"]] = raw.astype(_DTYPES[w["dtype"]]).reshape(w["shape"])
            offset += count * dtype.itemsize
        if offset != len(data):
            raise ValueError(f"tfjs weights {group['paths']}: {len(data) - offset} bytes left over")
    return out


def _attr(node: dict, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        return [base64.b64decode(v).decode() for v in lst.get("s", [])]
    for k in ("i", "f", "b"):
        if k in a:
            return int(a[k]) if k == "i" else a[k]
    return default


def _same_pads(in_hw, kernel_hw, strides_hw):
    before, after = [], []
    for size, k, s in zip(in_hw, kernel_hw, strides_hw):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


class _Builder:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights, self.nodes, self.inits, self.hw = weights, [], {}, {}

    def init(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def node(self, op, inputs, output, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output

    def operand(self, name: str) -> str:
        if name not in self.weights:
            return name
        v = self.weights[name].astype(np.float32)
        return self.init(name, v.reshape(-1, 1, 1) if v.ndim == 1 and v.size > 1 else v)

    def conv(self, n: dict, depthwise: bool) -> str:
        x, kname = n["input"][0], n["input"][1]
        k = self.weights[kname]  # [kh, kw, in, out] or depthwise [kh, kw, in, multiplier]
        kh, kw, cin, cout = k.shape
        w = k.transpose(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw) if depthwise else k.transpose(3, 2, 0, 1)
        strides = _attr(n, "strides", [1, 1, 1, 1])[1:3]
        dil = _attr(n, "dilations", [1, 1, 1, 1])[1:3]
        if _attr(n, "data_format", "NHWC") != "NHWC" or dil != [1, 1]:
            raise ValueError(f"tfjs node {n['name']}: only NHWC, undilated convolutions are supported")
        h, wd = self.hw[x]
        same = _attr(n, "padding") == "SAME"
        pads = _same_pads((h, wd), (kh, kw), strides) if same else [0, 0, 0, 0]
        self.hw[n["name"]] = ((h + pads[0] + pads[2] - kh) // strides[0] + 1, (wd + pads[1] + pads[3] - kw) // strides[1] + 1)
        inputs = [x, self.init(kname + ":oihw", w.astype(np.float32))]
        fused = _attr(n, "fused_ops", []) if n["op"].startswith("_Fused") else []
        if fused[:1] == ["BiasAdd"]:
            inputs.append(self.init(n["input"][2], self.weights[n["input"][2]].astype(np.float32)))
            fused = fused[1:]
        out = self.node("Conv", inputs, n["name"] + (":conv" if fused else ""), strides=strides, pads=pads,
                        group=cin if depthwise else 1, kernel_shape=[kh, kw])
        return self.activation(out, fused, n["name"])

    def activation(self, x: str, fused: list[str], out: str) -> str:
        if not fused:
            return x
        if fused == ["Relu"]:
            return self.node("Relu", [x], out)
        if fused == ["Relu6"]:
            return self.node("Clip", [x, self.init(out + ":lo", np.float32(0)), self.init(out + ":hi", np.float32(6))], out)
        raise ValueError(f"tfjs fused ops {fused} (node {out}) are not supported")

    def translate(self, n: dict) -> None:
        op, name, ins = n["op"], n["name"], n.get("input", [])
        simple = {"Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "Minimum": "Min", "Maximum": "Max"}
        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            self.conv(n, depthwise="Depthwise" in op)
            return
        if op in simple:
            self.node(simple[op], [self.operand(i) for i in ins], name)
        elif op in ("Relu", "Sigmoid", "Identity"):
            self.node(op, [ins[0]], name)
        elif op == "Relu6":
            self.activation(ins[0], ["Relu6"], name)
        elif op == "Mean":
            axes = [{1: 2, 2: 3, 3: 1}[int(a) % 4] for a in np.atleast_1d(self.weights[ins[1]])]
            self.node("ReduceMean", [ins[0]], name, axes=sorted(axes), keepdims=int(bool(_attr(n, "keep_dims", False))))
        else:
            raise ValueError(f"tfjs op {op} (node {name}) is not supported by maskgan.models.zoo.tfjs_graph")
        if ins and ins[0] in self.hw:
            self.hw[name] = self.hw[ins[0]]


def _needed(nodes: dict[str, dict], output: str) -> set[str]:
    seen, stack = set(), [output]
    while stack:
        name = stack.pop().split(":")[0].lstrip("^")
        if name not in seen and name in nodes:
            seen.add(name)
            stack.extend(nodes[name].get("input", []))
    return seen


def tfjs_to_onnx(model_json: Path, output: str):
    """model.json (weights beside it) -> onnx.ModelProto computing `output` from the one Placeholder, NCHW."""
    from onnx import TensorProto, helper

    model_json = Path(model_json)
    meta = json.loads(model_json.read_text())
    weights = read_weights(meta["weightsManifest"], model_json.parent)
    nodes = {n["name"]: n for n in meta["modelTopology"]["node"]}
    needed = _needed(nodes, output)
    b = _Builder(weights)
    (inp,) = [n for n in nodes.values() if n["op"] == "Placeholder"]
    _, h, w, c = (int(d["size"]) for d in _attr_shape(inp))
    b.hw[inp["name"]] = (h, w)
    for n in meta["modelTopology"]["node"]:  # tfjs lists nodes in a valid execution order
        if n["name"] in needed and n["op"] not in ("Const", "Placeholder"):
            b.translate(n)
    graph = helper.make_graph(
        b.nodes, "tfjs", [helper.make_tensor_value_info(inp["name"], TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", None])], list(b.inits.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _attr_shape(node: dict) -> list[dict]:
    return node["attr"]["shape"]["shape"]["dim"]
