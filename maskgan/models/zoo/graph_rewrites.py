"""Rewrites of a GraphSpec made once at conversion: same numbers, fewer passes, any batch.

- `free_reshape_batch`: a Reshape whose constant target hard-codes the export's batch (1 or 2 in the npm models)
  gets -1 there (other -1s become the sizes ONNX shape inference found, so only the batch is left free);
- `fold_affine_into_conv`: a Conv followed by BatchNormalization, or by a per-channel Mul/Add (how TensorFlow
  exports batch norm), becomes one Conv;
- `fuse_activations`: TensorFlow's PReLU export relu(x) + k(x - |x|) becomes PRelu(x, 2k), its ReLU6 chain
  max(min(relu(x), 6), 0) one Clip.
"""
from __future__ import annotations

import torch

from maskgan.models.zoo.graph_spec import GraphSpec, Node


def free_reshape_batch(spec: GraphSpec, shapes: dict[str, list[int]]) -> None:
    """Free the batch of Reshapes with a constant target (see the module's docstring)."""
    for n in spec.nodes:
        if n.op != "Reshape" or n.inputs[1] not in spec.consts:
            continue
        target = [int(v) for v in spec.consts[n.inputs[1]].tolist()]
        if len(target) < 2 or target[0] <= 0:
            continue
        known = shapes.get(n.outputs[0], [])
        if -1 in target[1:]:
            if len(known) != len(target) or 0 in known[1:]:
                raise ValueError(f"Reshape {n.outputs[0]}: cannot free its batch (output shape unknown)")
            target = known
        name = n.inputs[1] + ":batch_free"
        spec.consts[name] = torch.tensor([-1] + target[1:], dtype=torch.int64)
        n.inputs[1] = name


def _consumers(spec: GraphSpec) -> dict[str, list[Node]]:
    users: dict[str, list[Node]] = {}
    for n in spec.nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    return users


def _channel_vector(spec: GraphSpec, node: Node, conv_out: str, channels: int) -> torch.Tensor | None:
    """The per-output-channel constant that a Mul/Add node applies to conv_out, if it is one."""
    other = [i for i in node.inputs if i != conv_out]
    if len(other) != 1 or other[0] not in spec.consts:
        return None
    c = spec.consts[other[0]]
    if c.numel() == 1:
        return c.reshape(1).expand(channels).float()
    if c.numel() == channels and c.dim() >= 1 and (c.dim() == 1 or c.shape[-3] == channels):
        return c.reshape(channels).float()
    return None


def fold_affine_into_conv(spec: GraphSpec) -> GraphSpec:
    """Fold BatchNormalization / per-channel Mul / per-channel Add that alone consume a Conv's output."""
    changed = True
    while changed:
        changed = False
        users = _consumers(spec)
        for conv in spec.nodes:
            if conv.op != "Conv" or len(users.get(conv.outputs[0], [])) != 1 or conv.outputs[0] == spec.output:
                continue
            nxt = users[conv.outputs[0]][0]
            w = spec.consts[conv.inputs[1]]
            b = spec.consts[conv.inputs[2]] if len(conv.inputs) > 2 else torch.zeros(w.shape[0])
            scale = shift = None
            if nxt.op == "BatchNormalization":
                g, beta, mean, var = (spec.consts[i].float() for i in nxt.inputs[1:5])
                scale = g / torch.sqrt(var + nxt.attrs.get("epsilon", 1e-5))
                shift = beta - mean * scale
            elif nxt.op in ("Mul", "Add"):
                v = _channel_vector(spec, nxt, conv.outputs[0], w.shape[0])
                if v is not None:
                    scale, shift = (v, torch.zeros_like(v)) if nxt.op == "Mul" else (torch.ones_like(v), v)
            if scale is None:
                continue
            wname, bname = conv.inputs[1] + ":folded", conv.outputs[0] + ":bias_folded"
            spec.consts[wname] = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
            spec.consts[bname] = b * scale + shift
            conv.inputs = [conv.inputs[0], wname, bname]
            conv.outputs = [nxt.outputs[0]]
            spec.nodes.remove(nxt)
            changed = True
            break
    _drop_unused_consts(spec)
    return spec


def _producers(spec: GraphSpec) -> dict[str, Node]:
    return {o: n for n in spec.nodes for o in n.outputs}


def _sole_use(users, name: str, node: Node) -> bool:
    return [id(u) for u in users.get(name, [])] == [id(node)]


def _match_tf_prelu(spec: GraphSpec, add: Node, made, users):
    """relu(x) + k * (x - |x|), TensorFlow's PReLU export, as (x, slope) with slope 2k; else None."""
    for relu_out, mul_out in (add.inputs, add.inputs[::-1]):
        relu, mul = made.get(relu_out), made.get(mul_out)
        if not (relu and mul and relu.op == "Relu" and mul.op == "Mul"):
            continue
        x = relu.inputs[0]
        consts = [i for i in mul.inputs if i in spec.consts]
        sub = made.get(next((i for i in mul.inputs if i not in spec.consts), ""))
        if len(consts) != 1 or not sub or sub.op != "Sub" or sub.inputs[0] != x:
            continue
        ab = made.get(sub.inputs[1])
        if not ab or ab.op != "Abs" or ab.inputs[0] != x:
            continue
        if all(_sole_use(users, n.outputs[0], u) for n, u in ((relu, add), (mul, add), (sub, mul), (ab, sub))):
            return x, 2.0 * spec.consts[consts[0]].float(), (relu, mul, sub, ab)
    return None


def _match_relu_clip(spec: GraphSpec, mx: Node, made, users):
    """max(min(relu(x), hi), lo) with scalar constants (ReLU6 as TensorFlow exports it) as (x, lo, hi); else None."""
    lo_name = next((i for i in mx.inputs if i in spec.consts and spec.consts[i].numel() == 1), None)
    mn = made.get(next((i for i in mx.inputs if i != lo_name), ""))
    if lo_name is None or not mn or mn.op != "Min":
        return None
    hi_name = next((i for i in mn.inputs if i in spec.consts and spec.consts[i].numel() == 1), None)
    relu = made.get(next((i for i in mn.inputs if i != hi_name), ""))
    if hi_name is None or not relu or relu.op != "Relu":
        return None
    lo, hi = max(0.0, float(spec.consts[lo_name])), float(spec.consts[hi_name])
    if hi < lo or not (_sole_use(users, mn.outputs[0], mx) and _sole_use(users, relu.outputs[0], mn)):
        return None
    return relu.inputs[0], lo, hi, (mn, relu)


def fuse_activations(spec: GraphSpec) -> GraphSpec:
    """One op where TensorFlow exported several: relu(x) + k(x - |x|) -> PRelu(x, 2k); ReLU6 chains -> Clip."""
    users, made = _consumers(spec), _producers(spec)
    dead: set[int] = set()
    for n in spec.nodes:
        if n.op == "Add" and (m := _match_tf_prelu(spec, n, made, users)):
            x, slope, parts = m
            spec.consts[n.outputs[0] + ":slope"] = slope.reshape(-1, 1, 1) if slope.numel() > 1 else slope
            n.op, n.inputs, n.attrs = "PRelu", [x, n.outputs[0] + ":slope"], {}
        elif n.op == "Max" and (m := _match_relu_clip(spec, n, made, users)):
            x, lo, hi, parts = m
            spec.consts[n.outputs[0] + ":lo"], spec.consts[n.outputs[0] + ":hi"] = torch.tensor(lo), torch.tensor(hi)
            n.op, n.inputs, n.attrs = "Clip", [x, n.outputs[0] + ":lo", n.outputs[0] + ":hi"], {}
        else:
            continue
        dead.update(id(p) for p in parts)
    spec.nodes = [n for n in spec.nodes if id(n) not in dead]
    _drop_unused_consts(spec)
    return spec


def _drop_unused_consts(spec: GraphSpec) -> None:
    used = {i for n in spec.nodes for i in n.inputs}
    for k in [k for k in spec.consts if k not in used]:
        del spec.consts[k]
