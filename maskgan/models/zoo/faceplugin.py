"""FacePlugin MobileFaceNet (npm faceplugin-face-recognition-js 0.0.1, model/fr_feature.onnx), 512-d.

Facts from the package's own JavaScript (lib/fr_feature.js): the face is warped onto the ArcFace 5-point template
at 112 x 112; the canvas is read by OpenCV.js as RGBA, so channels 0..2 are R, G, B, each fed as (v - 127) / 128
into a [1, 3, 112, 112] tensor. The ONNX file is a PyTorch export (its Reshape hard-codes batch 1, freed here).
"""
from __future__ import annotations

from maskgan.models.zoo.base import Alignment
from maskgan.models.zoo.graph_model import GraphRecogniser, InputNorm
from maskgan.models.zoo.onnx_graph import GraphSpec, from_onnx

ONNX_FILE = "model/fr_feature.onnx"
DIM = 512
ALIGNMENT = Alignment("arcface", 112)
NORM = InputNorm("RGB", (127.0, 127.0, 127.0), 128.0)


def convert(files: dict[str, str]) -> dict:
    """fetch.CONVERTERS entry: the package's ONNX file -> a GraphSpec state (install time; needs `onnx`)."""
    import onnx

    return from_onnx(onnx.load(files[ONNX_FILE])).to_state()


def from_state(state: dict) -> GraphRecogniser:
    return GraphRecogniser("faceplugin", DIM, ALIGNMENT, NORM, GraphSpec.from_state(state))
