"""A parsed ONNX graph as plain data: its nodes, initialisers, inputs and outputs (what the rewrites and the torch
interpreter in onnx_graph share)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class GraphSpec:
    """A converted graph: nodes in execution order, constants by name, one input and one output."""

    nodes: list[Node]
    consts: dict[str, torch.Tensor]
    input: str
    output: str

    def to_state(self) -> dict:  # plain containers only, so torch.load(weights_only=True) reads it back
        return {"nodes": [[n.op, n.inputs, n.outputs, n.attrs] for n in self.nodes], "consts": self.consts,
                "input": self.input, "output": self.output}

    @classmethod
    def from_state(cls, state: dict) -> "GraphSpec":
        nodes = [Node(op, list(i), list(o), dict(a)) for op, i, o, a in state["nodes"]]
        return cls(nodes, dict(state["consts"]), state["input"], state["output"])
