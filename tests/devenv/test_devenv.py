"""The devenv is real: RBAC, scheduling, the Job controller, garbage collection, kwok Stages and
S3 behave as they do in a cluster, because they are the real components (make devenv)."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
from botocore.exceptions import ClientError
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeslim_dev.devenv import NotADevenv, check_devenv_kubeconfig, s3_client

pytestmark = pytest.mark.cluster

FAKE_NODE_TOLERATION = client.V1Toleration(key="kwok.x-k8s.io/node", operator="Exists", effect="NoSchedule")
GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
GPU_NODES = {"kwok-gpu-0", "kwok-gpu-1"}
ON_FAKE_NODES = {"type": "kwok"}  # real dev nodes may join the cluster; these tests mean kwok's


def container(name: str = "main", gpus: int = 0) -> client.V1Container:
    resources = {"cpu": "100m", "memory": "64Mi"}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    return client.V1Container(
        name=name,
        image="registry.invalid/kubeslim/never-pulled:0",  # kwok runs no container
        resources=client.V1ResourceRequirements(requests=resources, limits=resources),
    )


def job(name: str, gpus: int, tolerations: list[client.V1Toleration], annotations: dict | None = None,
        init_containers: list[str] = ()) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    node_selector=ON_FAKE_NODES,
                    tolerations=tolerations,
                    init_containers=[container(n) for n in init_containers] or None,
                    containers=[container(gpus=gpus)],
                ),
            ),
        ),
    )


def job_pods(core: client.CoreV1Api, namespace: str, job_name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items


def job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    conditions = batch.read_namespaced_job_status(name, namespace).status.conditions or []
    return next((c.type for c in conditions if c.status == "True" and c.type in ("Complete", "Failed")), None)


def test_fake_nodes_offer_gpus(k8s):
    nodes = {n.metadata.name: n for n in client.CoreV1Api(k8s).list_node(label_selector="type=kwok").items}
    assert GPU_NODES <= set(nodes) and "kwok-cpu-0" in nodes
    for name in GPU_NODES:
        node = nodes[name]
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert {(t.key, t.effect) for t in node.spec.taints} >= {("nvidia.com/gpu", "NoSchedule"), ("kwok.x-k8s.io/node", "NoSchedule")}
    assert "nvidia.com/gpu" not in nodes["kwok-cpu-0"].status.allocatable
    for node in nodes.values():
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"


def test_rbac_denies_a_serviceaccount_without_rights(k8s, namespace):
    core = client.CoreV1Api(k8s)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody")))
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    ).status.token

    cfg = client.Configuration()
    cfg.host = k8s.configuration.host
    cfg.ssl_ca_cert = k8s.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as as_nobody:
        # The token authenticates (TokenRequest + the apiserver's signing keys are real) ...
        review = client.AuthenticationV1Api(as_nobody).create_self_subject_review(client.V1SelfSubjectReview())
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"
        # ... and RBAC gives it nothing.
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_nobody).list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert "forbidden" in denied.value.body

        rbac = client.RbacAuthorizationV1Api(k8s)
        rbac.create_namespaced_role(namespace, client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])]))
        rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="nobody-reads-pods"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)]))
        assert client.CoreV1Api(as_nobody).list_namespaced_pod(namespace).items == []
        with pytest.raises(ApiException) as still_denied:
            client.CoreV1Api(as_nobody).list_namespaced_secret(namespace)
        assert still_denied.value.status == 403


def test_gpu_job_runs_on_a_kwok_gpu_node_and_completes(k8s, namespace, wait_for):
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    batch.create_namespaced_job(namespace, job("gpu", gpus=1, tolerations=[FAKE_NODE_TOLERATION, GPU_TOLERATION]))

    assert wait_for(lambda: job_condition(batch, namespace, "gpu"), timeout=90, what="Job gpu to finish") == "Complete"
    (pod,) = job_pods(core, namespace, "gpu")
    assert pod.spec.node_name in GPU_NODES
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"


@pytest.mark.parametrize(
    ("gpus", "tolerations", "expected"),
    [
        pytest.param(1, [FAKE_NODE_TOLERATION], "node(s) had untolerated taint", id="no-gpu-toleration"),
        pytest.param(9, [FAKE_NODE_TOLERATION, GPU_TOLERATION], "Insufficient nvidia.com/gpu", id="nine-gpus"),
    ],
)
def test_unschedulable_gpu_job_stays_pending(k8s, namespace, wait_for, gpus, tolerations, expected):
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    batch.create_namespaced_job(namespace, job("stuck", gpus=gpus, tolerations=tolerations))

    def unschedulable():
        for pod in job_pods(core, namespace, "stuck"):
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                    return pod, cond
        return None

    pod, cond = wait_for(unschedulable, timeout=60, what="the scheduler to report Unschedulable")
    assert cond.message.startswith("0/"), cond.message
    assert expected in cond.message, cond.message
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    assert job_condition(batch, namespace, "stuck") is None


def test_deleting_an_owner_garbage_collects_its_dependent(k8s, namespace, wait_for):
    core = client.CoreV1Api(k8s)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="dependent",
        owner_references=[client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)])))

    core.delete_namespaced_config_map("owner", namespace)

    def gone():
        try:
            core.read_namespaced_config_map("dependent", namespace)
            return False
        except ApiException as err:
            return err.status == 404

    wait_for(gone, timeout=60, what="the garbage collector to delete ConfigMap dependent")


def test_deleting_a_job_garbage_collects_its_pods(k8s, namespace, wait_for):
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    annotations = {"kubeslim.io/fake-exit-code": "0", "kubeslim.io/fake-duration": "1h"}  # keep it running
    batch.create_namespaced_job(namespace, job("long", gpus=1, tolerations=[FAKE_NODE_TOLERATION, GPU_TOLERATION], annotations=annotations))
    wait_for(lambda: [p for p in job_pods(core, namespace, "long") if p.status.phase == "Running"], timeout=60, what="a Running pod")

    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")

    wait_for(lambda: not job_pods(core, namespace, "long"), timeout=60, what="the pods of the deleted Job to be deleted")


def test_fake_exit_code_and_termination_message(k8s, namespace, wait_for):
    core = client.CoreV1Api(k8s)
    message = json.dumps({"stage": "calibrate", "ok": False, "error": "out of memory: 'x' \"y\""})
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="fails", annotations={
            "kubeslim.io/fake-exit-code": "3",
            "kubeslim.io/fake-termination-message": message,
        }),
        spec=client.V1PodSpec(restart_policy="Never", node_selector=ON_FAKE_NODES, tolerations=[FAKE_NODE_TOLERATION],
                              containers=[container()]),
    ))

    pod = wait_for(lambda: (p := core.read_namespaced_pod("fails", namespace)).status.phase == "Failed" and p,
                   timeout=60, what="pod fails to fail")
    assert pod.spec.node_name == "kwok-cpu-0"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (3, "Error", message)


def test_job_success_carries_the_termination_message(k8s, namespace, wait_for):
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    result = json.dumps({"ok": True, "artifacts": {"model": "s3://b/k/model.pdmodel"}, "accuracy": 0.71})
    batch.create_namespaced_job(namespace, job("ok", gpus=1, tolerations=[FAKE_NODE_TOLERATION, GPU_TOLERATION],
                                               annotations={"kubeslim.io/fake-termination-message": result},
                                               init_containers=["export", "calibrate"]))

    assert wait_for(lambda: job_condition(batch, namespace, "ok"), timeout=60, what="Job ok to finish") == "Complete"
    (pod,) = job_pods(core, namespace, "ok")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (0, result)
    assert [(s.name, s.state.terminated.exit_code) for s in pod.status.init_container_statuses] == [("export", 0), ("calibrate", 0)]


def test_failing_init_container_stops_the_pod(k8s, namespace, wait_for):
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    batch.create_namespaced_job(namespace, job("oom", gpus=1, tolerations=[FAKE_NODE_TOLERATION, GPU_TOLERATION],
                                               annotations={"kubeslim.io/fake-exit-code": "137",
                                                            "kubeslim.io/fake-reason": "OOMKilled",
                                                            "kubeslim.io/fake-container": "calibrate"},
                                               init_containers=["export", "calibrate", "verify"]))

    assert wait_for(lambda: job_condition(batch, namespace, "oom"), timeout=60, what="Job oom to finish") == "Failed"
    (pod,) = job_pods(core, namespace, "oom")
    assert pod.status.phase == "Failed"
    init = {s.name: s.state for s in pod.status.init_container_statuses}
    assert init["export"].terminated.exit_code == 0
    assert (init["calibrate"].terminated.exit_code, init["calibrate"].terminated.reason) == (137, "OOMKilled")
    assert init["verify"].waiting.reason == "PodInitializing"
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"


def test_s3_multipart_round_trip(s3, bucket):
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(21 * 1024 * 1024)
    mib = 1024 * 1024
    s3.upload_fileobj(io.BytesIO(data), bucket, "model/weights.bin",
                      Config=TransferConfig(multipart_threshold=8 * mib, multipart_chunksize=8 * mib))

    head = s3.head_object(Bucket=bucket, Key="model/weights.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # 8 + 8 + 5 MiB parts
    out = io.BytesIO()
    s3.download_fileobj(bucket, "model/weights.bin", out)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()


def test_s3_rejects_a_wrong_secret_key(s3_env, bucket):
    impostor = s3_client(s3_env, AWS_SECRET_ACCESS_KEY=s3_env["AWS_SECRET_ACCESS_KEY"] + "x")
    with pytest.raises(ClientError) as denied:
        impostor.list_objects_v2(Bucket=bucket)
    assert denied.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def _kubeconfig(cluster: str, server: str, ext_id: str | None) -> str:
    ext = f"""
    extensions:
    - name: kubeslim.io/devenv
      extension: {{id: "{ext_id}"}}""" if ext_id else ""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}{ext}
users: [{{name: u, user: {{}}}}]
contexts: [{{name: c, context: {{cluster: {cluster}, user: u}}}}]
current-context: c
"""


@pytest.mark.parametrize(
    ("cluster", "server", "ext_id", "why"),
    [
        ("kubeslim-devenv-abc", "https://127.0.0.1:16443", "abc", None),
        ("prod", "https://127.0.0.1:16443", "abc", "is not kubeslim-devenv-abc"),
        ("kubeslim-devenv-abc", "https://127.0.0.1:16443", None, "lacks the kubeslim.io/devenv extension"),
        ("kubeslim-devenv-abc", "https://10.1.2.3:6443", "abc", "not on loopback"),
    ],
)
def test_guard_accepts_only_devenv_kubeconfigs(tmp_path, cluster, server, ext_id, why):
    (tmp_path / "devenv-id").write_text("abc\n")
    (tmp_path / "kubeconfig").write_text(_kubeconfig(cluster, server, ext_id))
    if why is None:
        assert check_devenv_kubeconfig(tmp_path / "kubeconfig", devenv_dir=tmp_path) == "abc"
    else:
        with pytest.raises(NotADevenv, match=why):
            check_devenv_kubeconfig(tmp_path / "kubeconfig", devenv_dir=tmp_path)


def test_guard_refuses_a_copy_of_the_devenv_kubeconfig_elsewhere(devenv, tmp_path):
    assert check_devenv_kubeconfig(devenv.kubeconfig) == devenv.id
    copy = tmp_path / "kubeconfig"
    copy.write_text(devenv.kubeconfig.read_text())
    with pytest.raises(NotADevenv, match="tests only run against the devenv"):
        check_devenv_kubeconfig(copy)
