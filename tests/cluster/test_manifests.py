"""k8s/ manifests validate strictly, and the validator rejects each typical mistake with an error that names it."""

import copy
from pathlib import Path

import pytest
import yaml

from cluster.manifests import crd_dir, literal_credentials, main, validate_file, validate_manifest

K8S = Path(__file__).resolve().parents[2] / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))
# Built by concatenation so that this file itself holds no credential-shaped literal (AWS' documented examples).
FAKE_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def test_the_expected_manifests_exist():
    names = {p.name for p in MANIFESTS}
    assert {
        "raycluster.yaml",
        "rayjob-prepare.yaml",
        "rayjob-train.yaml",
        "rayjob-tune.yaml",
        "rayjob-train-existing-cluster.yaml",
        "podmonitor.yaml",
        "secrets.example.yaml",
    } <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates(path):
    assert validate_file(path) == []


def test_rayjobs_clean_up_after_themselves():
    for name in ("rayjob-prepare.yaml", "rayjob-train.yaml", "rayjob-tune.yaml"):
        spec = load(name)["spec"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0, name
        assert spec["entrypoint"].startswith("maskgan "), name


def _worker(doc):
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    return spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]


def _unknown_deep(d):
    _worker(d)["imagePullPolicyy"] = "Always"


def _typo_top_level(d):
    d["spec"]["shutdownAfterJobFinish"] = d["spec"].pop("shutdownAfterJobFinishes")


def _both(d):
    d["spec"]["clusterSelector"] = {"ray.io/cluster": "maskgan"}


def _neither(d):
    del d["spec"]["rayClusterSpec"]


def _runtime_env_not_yaml(d):
    d["spec"]["runtimeEnvYAML"] = "env_vars: {PYTHONUNBUFFERED: '1'"


def _runtime_env_not_mapping(d):
    d["spec"]["runtimeEnvYAML"] = "- pip\n- torch\n"


def _suspend_without_shutdown(d):
    d["spec"].update(suspend=True, shutdownAfterJobFinishes=False)
    del d["spec"]["ttlSecondsAfterFinished"]


def _gpu_mismatch(d):
    _worker(d)["resources"]["limits"]["nvidia.com/gpu"] = "2"


def _gpu_limit_only(d):
    del _worker(d)["resources"]["requests"]["nvidia.com/gpu"]


def _literal_secret_env(d):
    _worker(d)["env"] = [{"name": "AWS_SECRET_ACCESS_KEY", "value": FAKE_SECRET}]


def _literal_key_id_elsewhere(d):
    d["metadata"]["annotations"] = {"note": f"uses {FAKE_KEY_ID}"}


def _secret_in_runtime_env(d):
    d["spec"]["runtimeEnvYAML"] = "env_vars:\n  AWS_SECRET_ACCESS_KEY: abc\n"


def _duplicate_env(d):
    _worker(d)["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]


def _bad_quantity(d):
    _worker(d)["resources"]["limits"]["cpu"] = "lots"


def _no_name(d):
    del d["metadata"]["name"]


def _wrong_api_version(d):
    d["apiVersion"] = "ray.io/v1alpha1"


def _ttl_without_shutdown(d):
    d["spec"]["ttlSecondsAfterFinished"] = 60


BROKEN = [
    # (good manifest, mutation, text the error must contain)
    ("rayjob-train.yaml", _unknown_deep, "imagePullPolicyy"),
    ("raycluster.yaml", _unknown_deep, "imagePullPolicyy"),
    ("rayjob-train.yaml", _typo_top_level, "shutdownAfterJobFinish'"),
    ("rayjob-train.yaml", _both, "exactly one of rayClusterSpec"),
    ("rayjob-train.yaml", _neither, "exactly one of rayClusterSpec"),
    ("rayjob-train.yaml", _runtime_env_not_yaml, "runtimeEnvYAML: not valid YAML"),
    ("rayjob-train.yaml", _runtime_env_not_mapping, "runtimeEnvYAML: must be a YAML mapping"),
    ("rayjob-train.yaml", _suspend_without_shutdown, "suspended with shutdownAfterJobFinishes"),
    ("rayjob-train.yaml", _gpu_mismatch, "nvidia.com/gpu request 1 != limit 2"),
    ("raycluster.yaml", _gpu_limit_only, "nvidia.com/gpu request None != limit 1"),
    ("rayjob-train.yaml", _literal_secret_env, "env AWS_SECRET_ACCESS_KEY looks like a credential"),
    ("rayjob-train.yaml", _literal_secret_env, "AWS-secret-like"),
    ("raycluster.yaml", _literal_key_id_elsewhere, "AWS access key id"),
    ("rayjob-tune.yaml", _secret_in_runtime_env, "env_vars.AWS_SECRET_ACCESS_KEY looks like a credential"),
    ("rayjob-train.yaml", _duplicate_env, "duplicate list entry"),
    ("rayjob-prepare.yaml", _bad_quantity, "'lots' does not match"),
    ("rayjob-train.yaml", _no_name, "'name' is a required property"),
    ("podmonitor.yaml", _no_name, "'name' is a required property"),
    ("rayjob-train.yaml", _wrong_api_version, "must be ray.io/v1"),
    ("rayjob-train-existing-cluster.yaml", _ttl_without_shutdown, "ttlSecondsAfterFinished: needs shutdown"),
]


@pytest.mark.parametrize("name,mutate,expected", BROKEN, ids=[f"{n}-{m.__name__[1:]}" for n, m, _ in BROKEN])
def test_broken_manifest_is_rejected(name, mutate, expected):
    doc = copy.deepcopy(load(name))
    assert validate_manifest(doc) == []  # the mutation, not the base file, causes the error
    mutate(doc)
    errors = validate_manifest(doc)
    assert any(expected in e for e in errors), errors


def test_errors_never_repeat_the_secret():
    doc = load("rayjob-train.yaml")
    _literal_secret_env(doc)
    assert not any(FAKE_SECRET in e for e in validate_manifest(doc))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_no_literal_credentials(path):
    text = path.read_text()
    assert literal_credentials(text) == []
    if path.name != "secrets.example.yaml":
        assert "REPLACE_ME" not in text


def test_secret_template_holds_placeholders_only():
    docs = list(yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()))
    assert {d["kind"] for d in docs} == {"Secret"}
    for d in docs:
        assert set(d["stringData"].values()) == {"REPLACE_ME"}, d["metadata"]["name"]


def test_credential_scan_finds_both_key_kinds():
    assert len(literal_credentials(f"id={FAKE_KEY_ID} secret={FAKE_SECRET}")) == 2
    assert literal_credentials("sha=" + "0123456789abcdef" * 2 + "01234567") == []  # a 40-hex git sha is not a key


def test_cli_reports_per_file_and_fails_on_any_error(tmp_path, capsys):
    broken = copy.deepcopy(load("rayjob-train.yaml"))
    _both(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([load("podmonitor.yaml"), broken]))
    assert main([str(K8S / "rayjob-train.yaml")]) == 0
    assert main([str(K8S / "rayjob-train.yaml"), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "rayjob-train.yaml: OK" in out
    assert "doc 1 (RayJob/maskgan-train): spec: set exactly one" in out


def test_crd_dir_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKGAN_KUBERAY_CRDS", str(tmp_path))
    assert crd_dir() == tmp_path
