"""Strict offline validation of the KubeRay manifests in k8s/.

Two layers. (1) The RayCluster / RayJob CRD schemas (KubeRay v1.7.0, shipped in cluster/crds/ with their commit and
licence), made strict the way the API server's pruning is: a field the schema does not name is an error here rather
than silently dropped there. (2) The rules the operator enforces but the CRD cannot express, and our own rule that
no credential is written into a manifest. Other kinds (PodMonitor, Secret, ...) only get apiVersion/kind/metadata
checks.

    python -m cluster.manifests k8s/*.yaml
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

import jsonschema
import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~2 MB of YAML; libyaml is ~10x faster
_CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
_API_VERSION = "ray.io/v1"
_GPU = "nvidia.com/gpu"

# The CRDs declare the top-level metadata only as `type: object`; the API server checks it as ObjectMeta.
_OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # what the operator requires of RayCluster/RayJob names
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_AWS_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")
# A secret access key is 40 random base64 characters. Requiring a mix of classes keeps hex digests and paths out.
_AWS_SECRET_KEY = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")


def crd_dir() -> Path:
    """The KubeRay CRDs shipped in this package (cluster/crds/), or $MASKGAN_KUBERAY_CRDS to try other ones."""
    if os.environ.get("MASKGAN_KUBERAY_CRDS"):
        return Path(os.environ["MASKGAN_KUBERAY_CRDS"])
    return Path(__file__).resolve().with_name("crds")  # package data: beside this module in every install


def _strict(schema: dict) -> dict:
    """OpenAPI v3 structural schema -> JSON Schema that rejects unknown fields."""
    s = dict(schema)
    if s.get("x-kubernetes-int-or-string") and "anyOf" not in s and "type" not in s:
        s["type"] = ["integer", "string"]
    if s.get("nullable") and isinstance(s.get("type"), str):
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: _strict(v) for k, v in s["properties"].items()}
    if s.get("type") == "object" and "additionalProperties" not in s and not s.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        # The API server prunes what the schema does not name (an object without properties keeps nothing).
        s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _strict(s["additionalProperties"])
    if isinstance(s.get("items"), dict):
        s["items"] = _strict(s["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [_strict(x) for x in s[key]]
    return s


def _list_type(validator, list_type, instance, schema):
    # x-kubernetes-list-type map/set: duplicate keys (two env vars or containers with one name) are rejected.
    if not isinstance(instance, list) or list_type not in ("map", "set"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = set()
    for item in instance:
        if list_type == "map" and isinstance(item, dict):
            ident = json.dumps([item.get(k) for k in keys])
        else:
            ident = json.dumps(item, sort_keys=True)
        if ident in seen:
            what = f"{keys}={ident}" if list_type == "map" else ident
            yield jsonschema.ValidationError(f"duplicate list entry {what}")
        seen.add(ident)


_Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type})


@functools.lru_cache(maxsize=None)
def _validator(kind: str):
    """The strict validator for a KubeRay kind; loaded once per process."""
    if kind == "":  # non-KubeRay kinds: metadata only
        return _Validator({"type": "object", "properties": {"metadata": _OBJECT_META}, "required": ["metadata"]})
    with open(crd_dir() / _CRD_FILES[kind], encoding="utf-8") as f:
        crd = yaml.load(f, Loader=_LOADER)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = _OBJECT_META
    schema["properties"].pop("status", None)  # written by the operator, never by us
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return _Validator(schema)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out.lstrip(".") or "<root>"


def _walk(node, kind: type, path=()):
    """Yield (path, value) for every value of the given type in a document."""
    if isinstance(node, kind):
        yield path, node
    if isinstance(node, (dict, list)):
        for k, v in node.items() if isinstance(node, dict) else enumerate(node):
            yield from _walk(v, kind, (*path, k))


def literal_credentials(text: str) -> list[str]:
    """AWS-looking keys in text, masked so the report itself leaks nothing."""
    found = [f"AWS access key id {m[:4]}…" for m in _AWS_ACCESS_KEY_ID.findall(text)]
    for m in _AWS_SECRET_KEY.findall(text):
        upper, lower, digits = (sum(map(f, m)) for f in (str.isupper, str.islower, str.isdigit))
        if upper >= 5 and lower >= 5 and digits >= 1:
            found.append(f"AWS-secret-like 40-character string {m[:4]}…")
    return found


def _credential_errors(doc: dict) -> list[str]:
    errors = []
    for path, node in _walk(doc, dict):
        env = node.get("env")
        for i, var in enumerate(env if isinstance(env, list) else []):
            if isinstance(var, dict) and _SECRET_NAME.search(str(var.get("name", ""))) and "value" in var:
                errors.append(
                    f"{_path((*path, 'env', i))}: env {var['name']} looks like a credential but has a literal "
                    "value; use valueFrom.secretKeyRef or envFrom"
                )
    for path, text in _walk(doc, str):
        errors += [f"{_path(path)}: literal credential: {what}" for what in literal_credentials(text)]
    return errors


def _runtime_env_errors(text: str) -> list[str]:
    try:
        env = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        return [f"spec.runtimeEnvYAML: not valid YAML: {str(e).splitlines()[0]}"]
    if env is None:
        return []
    if not isinstance(env, dict):
        return [f"spec.runtimeEnvYAML: must be a YAML mapping (a runtime_env), got {type(env).__name__}"]
    # A runtime env cannot reference a Secret, so a credential-looking name here is always a literal.
    return [
        f"spec.runtimeEnvYAML: env_vars.{name} looks like a credential; pass it from a Secret in the pod env"
        for name in (env.get("env_vars") or {})
        if _SECRET_NAME.search(str(name))
    ]


def _rayjob_errors(spec: dict) -> list[str]:
    errors = []
    selector = spec.get("clusterSelector")
    if bool(spec.get("rayClusterSpec")) == bool(selector):
        errors.append("spec: set exactly one of rayClusterSpec (a new cluster) or clusterSelector (an existing one)")
    if isinstance(selector, dict) and selector and not selector.get("ray.io/cluster"):
        errors.append("spec.clusterSelector: needs the key ray.io/cluster (the RayCluster's name)")
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        errors.append("spec.suspend: a RayJob can only be suspended with shutdownAfterJobFinishes: true")
    ttl = spec.get("ttlSecondsAfterFinished")
    if isinstance(ttl, int) and ttl > 0 and not spec.get("shutdownAfterJobFinishes"):
        errors.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true")
    if isinstance(spec.get("runtimeEnvYAML"), str):
        errors += _runtime_env_errors(spec["runtimeEnvYAML"])
    return errors


def _cluster_spec_errors(spec: dict, where: str) -> list[str]:
    auth = spec.get("authOptions", {}).get("mode") if isinstance(spec.get("authOptions"), dict) else None
    version = re.match(r"(\d+)\.(\d+)", str(spec.get("rayVersion", "")))
    if auth == "token" and (not version or tuple(map(int, version.groups())) < (2, 52)):
        return [f"{where}.rayVersion: authOptions.mode token needs rayVersion 2.52.0 or later"]
    return []


def _gpu_errors(doc: dict) -> list[str]:
    # Extended resources are not overcommitted: Kubernetes wants request == limit, and a mismatch is a typo.
    errors = []
    for path, node in _walk(doc, dict):
        res = node.get("resources")
        if not isinstance(res, dict) or not ({"requests", "limits"} & res.keys()):
            continue
        req, lim = (res[k].get(_GPU) if isinstance(res.get(k), dict) else None for k in ("requests", "limits"))
        if (req is not None or lim is not None) and str(req) != str(lim):
            errors.append(f"{_path((*path, 'resources'))}: {_GPU} request {req} != limit {lim}")
    return errors


def _name(doc: dict):
    meta = doc.get("metadata")
    return meta.get("name") if isinstance(meta, dict) else None


def validate_manifest(doc: dict) -> list[str]:
    """Errors for one manifest document; an empty list means valid."""
    if not isinstance(doc, dict):
        return [f"<root>: a manifest must be a mapping, got {type(doc).__name__}"]
    errors = [f"<root>: missing {k}" for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str)]
    if errors:
        return errors
    kind = doc["kind"]
    if kind in _CRD_FILES:
        if doc["apiVersion"] != _API_VERSION:
            errors.append(f"apiVersion: {kind} must be {_API_VERSION}, got {doc['apiVersion']}")
    elif doc["apiVersion"].split("/")[0] == "ray.io":
        return [f"kind: {kind} is not one of {sorted(_CRD_FILES)}; no schema to check it against"]
    else:
        kind = ""
    for e in sorted(_validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        errors.append(f"{_path(e.absolute_path)}: {e.message}")
    errors += _credential_errors(doc)
    if not kind:
        return errors
    name = _name(doc)
    if isinstance(name, str) and not _DNS1035.match(name):
        errors.append(f"metadata.name: {name!r} must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter)")
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    if kind == "RayJob":
        errors += _rayjob_errors(spec)
        if isinstance(spec.get("rayClusterSpec"), dict):
            errors += _cluster_spec_errors(spec["rayClusterSpec"], "spec.rayClusterSpec")
    else:
        errors += _cluster_spec_errors(spec, "spec")
    return errors + _gpu_errors(doc)


def validate_file(path) -> list[str]:
    """Errors for every document of a (multi-document) YAML file, each prefixed with the document it is in."""
    try:
        with open(path, encoding="utf-8") as f:
            docs = list(yaml.load_all(f, Loader=_LOADER))
    except (OSError, yaml.YAMLError) as e:
        return [f"{path}: {str(e).splitlines()[0]}"]
    errors = []
    for i, doc in enumerate(d for d in docs if d is not None):
        label = f"doc {i}"
        if isinstance(doc, dict):
            label += f" ({doc.get('kind')}/{_name(doc)})"
        errors += [f"{label}: {e}" for e in validate_manifest(doc)]
    return errors


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m cluster.manifests FILE.yaml...", file=sys.stderr)
        return 2
    failed = False
    for path in argv:
        errors = validate_file(path)
        failed |= bool(errors)
        print(f"{path}: {'OK' if not errors else f'{len(errors)} error(s)'}")
        for e in errors:
            print(f"  {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
