"""kubeslim_dev.kueue, which renders what devenv/kueue.sh applies, on a small tree laid out like
Kueue's module source (config/components/crd, config/components/webhook)."""
from __future__ import annotations

import pytest
import yaml

from kubeslim_dev import kueue

pytestmark = pytest.mark.unit


def _hook(name: str, group: str, resource: str) -> dict:
    return {"name": name, "failurePolicy": "Fail",
            "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": f"/mutate-{resource}"}},
            "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": [resource]}]}


@pytest.fixture
def source(tmp_path):
    crd = tmp_path / "config/components/crd"
    (crd / "bases").mkdir(parents=True)
    (crd / "patches").mkdir()
    for plural in ("workloads", "resourceflavors"):
        (crd / "bases" / f"{plural}.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
             "metadata": {"name": f"{plural}.kueue.x-k8s.io"}, "spec": {"group": "kueue.x-k8s.io"}}))
    (crd / "patches" / "webhook_in_workloads.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
         "metadata": {"name": "workloads.kueue.x-k8s.io"},
         "spec": {"conversion": {"strategy": "Webhook", "webhook": {
             "clientConfig": {"service": {"namespace": "system", "name": "webhook-service", "path": "/convert"}},
             "conversionReviewVersions": ["v1"]}}}}))
    (crd / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": ["bases/workloads.yaml", "bases/resourceflavors.yaml"],
         "patches": [{"path": "patches/webhook_in_workloads.yaml"}]}))
    hooks = tmp_path / "config/components/webhook"
    hooks.mkdir(parents=True)
    hooks.joinpath("manifests.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "mutating-webhook-configuration"},
         "webhooks": [_hook("mjob.kb.io", "batch", "jobs"), _hook("mpod.kb.io", "", "pods"),
                      _hook("mdeployment.kb.io", "apps", "deployments"), _hook("mworkload.kb.io", "kueue.x-k8s.io", "workloads")]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": "validating-webhook-configuration"},
         "webhooks": [_hook("vjob.kb.io", "batch", "jobs"), _hook("vrayjob.kb.io", "ray.io", "rayjobs")]},
    ]))
    return tmp_path


def test_only_job_and_kueue_webhooks_are_installed_and_job_ones_only_see_queued_jobs(source):
    mutating, validating = kueue.webhook_configurations(source)
    # Kueue's cert rotator injects its CA into configurations of exactly these names.
    assert (mutating["metadata"]["name"], validating["metadata"]["name"]) == (
        "kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration")
    assert [h["name"] for h in mutating["webhooks"]] == ["mjob.kb.io", "mworkload.kb.io"]
    assert [h["name"] for h in validating["webhooks"]] == ["vjob.kb.io"]
    queued = {"matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]}
    by_name = {h["name"]: h for h in mutating["webhooks"] + validating["webhooks"]}
    assert by_name["mjob.kb.io"]["objectSelector"] == queued and by_name["vjob.kb.io"]["objectSelector"] == queued
    assert "objectSelector" not in by_name["mworkload.kb.io"]
    for hook in by_name.values():
        assert hook["clientConfig"]["service"] == {"name": kueue.SERVICE, "namespace": kueue.NAMESPACE,
                                                   "path": hook["clientConfig"]["service"]["path"]}


def test_crds_get_the_conversion_webhook_kueues_kustomization_patches_in(source):
    by_name = {d["metadata"]["name"]: d for d in kueue.crds(source)}
    conv = by_name["workloads.kueue.x-k8s.io"]["spec"]["conversion"]
    assert conv["strategy"] == "Webhook"
    assert conv["webhook"]["clientConfig"]["service"] == {"namespace": kueue.NAMESPACE, "name": kueue.SERVICE, "path": "/convert"}
    assert "conversion" not in by_name["resourceflavors.kueue.x-k8s.io"]["spec"]


def test_the_webhook_service_is_the_host_process_through_an_endpointslice():
    ns, secret, svc, eps = kueue.webhook_endpoint("10.77.0.1", 16943)
    assert (ns["kind"], secret["kind"]) == ("Namespace", "Secret") and "data" not in secret
    assert "selector" not in svc["spec"]
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == svc["metadata"]["name"]
    # kube-proxy pairs a Service port with an endpoint port by name.
    assert svc["spec"]["ports"][0]["name"] == eps["ports"][0]["name"]
    assert (eps["endpoints"][0]["addresses"], eps["ports"][0]["port"]) == (["10.77.0.1"], 16943)


def test_the_cluster_queue_holds_the_gpu_quota_and_each_namespace_gets_a_local_queue():
    flavor, cq, *lqs = kueue.queues(2, ["a", "b"])
    (group,) = cq["spec"]["resourceGroups"]
    quotas = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    assert quotas[kueue.GPU] == 2 and set(group["coveredResources"]) == set(quotas)
    assert group["flavors"][0]["name"] == flavor["metadata"]["name"]
    assert [(q["metadata"]["namespace"], q["spec"]["clusterQueue"]) for q in lqs] == [("a", cq["metadata"]["name"]),
                                                                                   ("b", cq["metadata"]["name"])]


def test_the_controller_config_manages_its_certs_and_only_queued_jobs():
    cfg = kueue.config("/x/certs", "10.77.0.1", 16943, "127.0.0.1:1", "127.0.0.1:2")
    assert cfg["internalCertManagement"] == {"enable": True, "webhookServiceName": kueue.SERVICE,
                                             "webhookSecretName": kueue.SECRET}
    assert cfg["webhook"] == {"host": "10.77.0.1", "port": 16943, "certDir": "/x/certs"}
    assert cfg["manageJobsWithoutQueueName"] is False and cfg["integrations"]["frameworks"] == ["batch/job"]


def test_the_cli_prints_a_yaml_stream_and_refuses_bad_arguments(source, capsys):
    assert kueue.main(["queues", "2", "ns1"]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["ResourceFlavor", "ClusterQueue", "LocalQueue"]
    assert kueue.main(["install", str(source)]) == 2
    assert "install SOURCE_DIR" in capsys.readouterr().err
