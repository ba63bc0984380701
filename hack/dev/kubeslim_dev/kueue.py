"""Kueue in the devenv (devenv/kueue.sh): the objects that make Kueue's controller, run as a host
process, part of the cluster, rendered from the manifests of Kueue's own Go module source.

What differs from Kueue's kustomize install (config/default), and why:
- the webhook Service has no selector: an EndpointSlice points it at the host process on the
  node's address (the apiserver reaches ClusterIPs through kube-proxy in the host netns);
- only the webhooks of batch/v1 Jobs and of Kueue's own kinds are installed: the pod, deployment
  and statefulset webhooks would hold every such object in the cluster while Kueue is stopped;
- the Job webhooks only see Jobs labelled with a queue name (objectSelector), so a stopped Kueue
  never blocks a Job that does not ask for a queue.

    python -m kubeslim_dev.kueue install SOURCE_DIR NODE_IP WEBHOOK_PORT   # CRDs, webhooks, Service
    python -m kubeslim_dev.kueue config CERT_DIR NODE_IP WEBHOOK_PORT METRICS_ADDR HEALTH_ADDR
    python -m kubeslim_dev.kueue queues GPU_QUOTA [NAMESPACE...]           # flavor, ClusterQueue, LocalQueues
(each prints a YAML stream for `kubectl apply -f -`).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"          # Kueue's cert rotator derives the webhook configuration names from it
SECRET = "kueue-webhook-server-cert"
PREFIX = "kueue-"                          # config/default's namePrefix
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
FLAVOR = "default-flavor"
CLUSTER_QUEUE = "kubeslim-cluster-queue"
LOCAL_QUEUE = "kubeslim-queue"
GPU = "nvidia.com/gpu"
# Kueue admits a Workload only if its ClusterQueue covers every resource its pods request; cpu and
# memory are set far above what the devenv's nodes hold, so the GPU quota alone decides.
CPU_QUOTA, MEMORY_QUOTA = "64", "256Gi"
# The groups whose webhooks are installed (see the module docstring).
WEBHOOK_RESOURCES = {("batch", "jobs"), ("kueue.x-k8s.io", "*")}


def _load_all(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crds(source: Path, service_namespace: str = NAMESPACE) -> list[Obj]:
    """Kueue's CRDs, with the conversion webhooks its config/components/crd/kustomization.yaml
    patches in (Kueue's controllers speak v1beta2, v1beta1 is stored): they point at our Service."""
    crd_dir = source / "config" / "components" / "crd"
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    docs = {d["metadata"]["name"]: d for r in kustomization["resources"] for d in _load_all(crd_dir / r)}
    for patch in kustomization.get("patches") or []:
        (doc,) = _load_all(crd_dir / patch["path"])
        conversion = copy.deepcopy(doc["spec"]["conversion"])
        conversion["webhook"]["clientConfig"]["service"].update(namespace=service_namespace, name=SERVICE)
        docs[doc["metadata"]["name"]]["spec"]["conversion"] = conversion
    return list(docs.values())


def _wanted(webhook: Obj) -> bool:
    return any((group, resource) in WEBHOOK_RESOURCES or (group, "*") in WEBHOOK_RESOURCES
               for rule in webhook.get("rules") or [] for group in rule.get("apiGroups") or []
               for resource in rule.get("resources") or [])


def _is_job_webhook(webhook: Obj) -> bool:
    return any("batch" in (r.get("apiGroups") or []) and "jobs" in (r.get("resources") or []) for r in webhook.get("rules") or [])


def webhook_configurations(source: Path, namespace: str = NAMESPACE) -> list[Obj]:
    """The mutating and validating configurations of config/components/webhook, cut to the Job and
    Kueue webhooks, the Job ones scoped to Jobs that name a queue."""
    out = []
    for doc in _load_all(source / "config" / "components" / "webhook" / "manifests.yaml"):
        doc = copy.deepcopy(doc)
        doc["metadata"]["name"] = PREFIX + doc["metadata"]["name"]
        kept = []
        for hook in doc.get("webhooks") or []:
            if not _wanted(hook):
                continue
            hook["clientConfig"]["service"].update(namespace=namespace, name=SERVICE)
            if _is_job_webhook(hook):
                hook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
            kept.append(hook)
        doc["webhooks"] = kept
        out.append(doc)
    return out


def webhook_endpoint(node_ip: str, port: int, namespace: str = NAMESPACE) -> list[Obj]:
    """The Namespace, the empty Secret Kueue's cert rotator fills, and a Service without selector
    whose EndpointSlice is the host process."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": namespace}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": namespace},
         "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{SERVICE}-host", "namespace": namespace,
                      "labels": {"kubernetes.io/service-name": SERVICE,
                                 "endpointslice.kubernetes.io/managed-by": "kubeslim-devenv"}},
         "addressType": "IPv4",
         "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [node_ip], "conditions": {"ready": True}}]},
    ]


def install(source: Path, node_ip: str, port: int) -> list[Obj]:
    return [*webhook_endpoint(node_ip, port), *crds(source), *webhook_configurations(source)]


def config(cert_dir: str, node_ip: str, port: int, metrics_address: str, health_address: str) -> Obj:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for one controller outside the cluster:
    it manages its own webhook certificates (written to cert_dir), serves batch/v1 Jobs only, and
    leaves Jobs without a queue name alone."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": health_address},
        "metrics": {"bindAddress": metrics_address},
        "webhook": {"host": node_ip, "port": port, "certDir": cert_dir},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
    }


def queues(gpu_quota: int, namespaces: list[str], local_queue: str = LOCAL_QUEUE) -> list[Obj]:
    """A ResourceFlavor without node labels (every GPU node is alike here), a ClusterQueue whose
    nvidia.com/gpu quota is `gpu_quota`, and a LocalQueue on it in each namespace."""
    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": CLUSTER_QUEUE},
         "spec": {"namespaceSelector": {},
                  "resourceGroups": [{"coveredResources": ["cpu", "memory", GPU],
                                      "flavors": [{"name": FLAVOR, "resources": [
                                          {"name": "cpu", "nominalQuota": CPU_QUOTA},
                                          {"name": "memory", "nominalQuota": MEMORY_QUOTA},
                                          {"name": GPU, "nominalQuota": gpu_quota}]}]}]}},
        *(local_queue_manifest(ns, local_queue) for ns in namespaces),
    ]


def local_queue_manifest(namespace: str, name: str = LOCAL_QUEUE) -> Obj:
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": CLUSTER_QUEUE}}


def main(argv: list[str]) -> int:
    usage = __doc__.split("\n\n")[-1]
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "install" and len(args) == 3:
        docs = install(Path(args[0]), args[1], int(args[2]))
    elif cmd == "config" and len(args) == 5:
        docs = [config(args[0], args[1], int(args[2]), args[3], args[4])]
    elif cmd == "queues" and args:
        docs = queues(int(args[0]), args[1:])
    else:
        print(usage, file=sys.stderr)
        return 2
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
