"""deploy/kubernetes/: every manifest validated against the Kubernetes JSON schemas (kubernetes-validate,
strict: an unknown field fails) and checked for the invariants an air-gapped cluster needs: pinned
images, no egress beyond the namespace, probes and resources on every container, Qdrant spread one
node per machine, the collection's sharding and replication, the GPUs vLLM shards the model over."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from appliance.settings import QdrantServerStoreSettings, load_settings
from tests.conftest import ROOT

BASE = ROOT / "deploy" / "kubernetes"
WORKLOADS = ("Deployment", "StatefulSet")


def _kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((BASE / "kustomization.yaml").read_text()))


def _documents() -> list[dict[str, Any]]:
    docs = []
    for name in _kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    return docs


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _documents() if d["kind"] == kind]


def _pod_spec(w: dict[str, Any]) -> dict[str, Any]:
    spec = w["spec"]["jobTemplate"]["spec"] if w["kind"] == "CronJob" else w["spec"]
    return dict(spec["template"]["spec"])


def _containers(kinds: tuple[str, ...] = WORKLOADS) -> list[tuple[str, dict[str, Any]]]:
    """Containers of the servers (Deployments, StatefulSets), or of the kinds given."""
    return [(w["metadata"]["name"], c) for w in _documents() if w["kind"] in kinds
            for c in _pod_spec(w)["containers"]]


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extras")
    docs = _documents()
    assert {d["kind"] for d in docs} >= {"Namespace", "NetworkPolicy", "Deployment", "StatefulSet", "Service",
                                         "PersistentVolumeClaim", "PodDisruptionBudget", "CronJob"}
    for doc in docs:
        kv.validate(doc, "1.30.0", strict=True)  # a cluster of the last two years; raises on any error
    listed = set(_kustomization()["resources"]) | {"kustomization.yaml", "appliance-settings.yaml"}
    assert {p.name for p in BASE.glob("*.yaml")} == listed  # no manifest the kustomization forgets


def test_the_settings_in_the_config_map_are_valid_appliance_settings() -> None:
    (generator,) = _kustomization()["configMapGenerator"]
    target, source = generator["files"][0].split("=")
    assert target == "appliance.yaml"
    settings = load_settings(BASE / source, {})
    store = settings.store
    assert isinstance(store, QdrantServerStoreSettings)
    assert store.url == "http://qdrant:6333"
    (qdrant,) = [d for d in _of_kind("StatefulSet") if d["metadata"]["name"] == "qdrant"]
    nodes = qdrant["spec"]["replicas"]
    assert nodes == 3
    assert store.shard_number is not None
    assert store.shard_number % nodes == 0  # shards spread evenly over the nodes
    assert store.replication_factor == 2  # one node can fail
    assert store.write_consistency_factor == 2
    assert settings.llm.provider == "openai"
    assert str(settings.llm.base_url).startswith("http://vllm:8000")  # type: ignore[union-attr]
    mounts = {m["mountPath"] for _, c in _containers() if c["name"] == "appliance" for m in c["volumeMounts"]}
    assert "/etc/appliance" in mounts
    assert str(settings.data_dir) in mounts
    assert str(settings.shared_dir) in mounts
    assert settings.database.url == "postgresql://appliance@postgres:5432/appliance"
    assert settings.database.password is None  # from the Secret, never in the config map


def test_the_appliance_runs_as_several_replicas_sharing_their_state() -> None:
    (deployment,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "appliance"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = _pod_spec(deployment)
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {d["metadata"]["name"]: d for d in _of_kind("PersistentVolumeClaim")}
    for v in volumes.values():  # per-pod scratch, or a volume every replica can mount at once
        if "persistentVolumeClaim" in v:
            modes = claims[v["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"]
            assert set(modes) & {"ReadWriteMany", "ReadOnlyMany"}, v["name"]
    (container,) = spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "$(POD_NAME)" in env["APPLIANCE_AUDIT__DIR"]["value"]  # one audit chain per replica
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["APPLIANCE_DATABASE__PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "database-password"
    (postgres,) = [c for _, c in _containers() if c["name"] == "postgres"]
    pg_env = {e["name"]: e for e in postgres["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"] == env["APPLIANCE_DATABASE__PASSWORD"]["valueFrom"]


def test_ingest_workers_share_the_manifest_and_the_documents() -> None:
    (job,) = _of_kind("CronJob")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["jobTemplate"]["spec"]["parallelism"] >= 2
    ((_, worker),) = _containers(("CronJob",))
    assert worker["args"][0] == "ingest"
    (appliance,) = [c for _, c in _containers() if c["name"] == "appliance"]
    documents = {m["mountPath"] for m in appliance["volumeMounts"] if m["name"] == "documents"}
    assert documents == {m["mountPath"] for m in worker["volumeMounts"] if m["name"] == "documents"}
    assert documents <= set(worker["args"])  # what the workers ingest is what the replicas serve from


def test_images_are_pinned() -> None:
    from appliance.ops.bundle import compose_images

    for workload, container in _containers((*WORKLOADS, "CronJob")):
        image = container["image"]
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name, f"{workload}: {image} has no tag"
        assert tag not in ("latest", "main", "nightly"), f"{workload}: {image} is not a fixed version"
        assert "@sha256:" in image or any(ch.isdigit() for ch in tag), f"{workload}: {image}"
    compose = (ROOT / "deploy" / "compose.vllm.yaml").read_text()
    for _, container in _containers((*WORKLOADS, "CronJob")):
        image = container["image"]
        if image.split(":")[0] + ":" in compose:  # the same version as the compose stack's
            assert image in compose, f"{image} differs from the compose stack's"
        assert image in compose_images(ROOT), f"{image} is not saved into the air-gapped bundle"


def test_every_container_has_probes_and_resources() -> None:
    for workload, c in _containers():
        assert "readinessProbe" in c, workload
        assert "livenessProbe" in c, workload
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (workload, kind)
    (appliance,) = [c for _, c in _containers() if c["name"] == "appliance"]
    assert appliance["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert appliance["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert appliance["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_pod_may_reach_beyond_the_namespace() -> None:
    policies = _of_kind("NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) ==
            {"Ingress", "Egress"} and not p["spec"].get("egress") and not p["spec"].get("ingress")]
    assert deny, "a default-deny policy for every pod"
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                assert "ipBlock" not in peer, policy["metadata"]["name"]
                if "namespaceSelector" in peer:  # only the cluster's DNS, on port 53
                    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                    assert {p["port"] for p in rule["ports"]} == {53}
                else:
                    assert set(peer) == {"podSelector"}  # a pod of this namespace
            assert rule.get("to"), "an egress rule without `to` would allow everywhere"


def test_qdrant_nodes_run_on_different_machines_in_distributed_mode() -> None:
    (qdrant,) = [d for d in _of_kind("StatefulSet") if d["metadata"]["name"] == "qdrant"]
    spec = qdrant["spec"]["template"]["spec"]
    (rule,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"] == qdrant["spec"]["selector"]["matchLabels"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    assert env["QDRANT__TELEMETRY_DISABLED"] == "true"
    assert "--bootstrap" in spec["containers"][0]["args"][0]
    (pdb,) = _of_kind("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_vllm_shards_the_model_over_the_gpus_it_requests_and_stays_offline() -> None:
    (vllm,) = [c for _, c in _containers() if c["name"] == "vllm"]
    tp = next(int(a.split("=")[1]) for a in vllm["args"] if a.startswith("--tensor-parallel-size="))
    assert tp == 4
    assert int(vllm["resources"]["limits"]["nvidia.com/gpu"]) == tp
    assert int(vllm["resources"]["requests"]["nvidia.com/gpu"]) == tp
    env = {e["name"]: e["value"] for e in vllm["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"
    assert vllm["args"][0].startswith("/models/")  # a local folder, never a hub id


def test_the_secret_the_manifests_need_is_documented() -> None:
    refs = [e["valueFrom"]["secretKeyRef"] for _, c in _containers((*WORKLOADS, "CronJob"))
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert {r["name"] for r in refs} == {"appliance-secrets"}
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "create secret generic appliance-secrets" in docs
    for key in {r["key"] for r in refs}:
        assert f"--from-literal={key}=" in docs or f"--from-file={key}=" in docs, key

