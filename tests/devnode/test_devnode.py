"""The dev node agent (hack/devnode) runs real pods as local processes and reports their status
the way kubelet does. Needs the devenv control plane (no kwok involved)."""
from __future__ import annotations

import base64
import os
import time

import pytest

from kubeapi import ns_path
from procs import session_pids
from tests.devnode.conftest import wait_pod

pytestmark = pytest.mark.e2e


def phase_in(*phases):
    return lambda pod: (pod.get("status") or {}).get("phase") in phases


def statuses(pod: dict, key: str = "containerStatuses") -> dict[str, dict]:
    return {s["name"]: s for s in (pod.get("status") or {}).get(key) or []}


def conditions(pod: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_init_containers_env_volumes_and_termination_message(devnode, namespace):
    kube = devnode.kube
    kube.create(ns_path(namespace, "secrets"), {"metadata": {"name": "creds"}, "data": {"token": b64("s3cret")}})
    kube.create(ns_path(namespace, "configmaps"), {"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}})
    devnode.create_pod(namespace, "p", {
        "volumes": [{"name": "work", "emptyDir": {}}, {"name": "cfgvol", "configMap": {"name": "cfg"}}],
        "initContainers": [
            {"name": "prepare", "image": "busybox", "command": ["sh", "-c", 'echo "$GREETING" > /work/greeting; echo prepared'],
             "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}}],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            {"name": "check", "image": "busybox", "command": ["test", "-s", "/work/greeting"],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
        ],
        "containers": [
            {"name": "main", "image": "kubeslim/job:dev", "command": ["python", "-c"],
             "args": ["import os, sys\n"
                      "greeting = open('/work/greeting').read().strip()\n"
                      "mounted = open('/etc/cfg/greeting').read()\n"
                      "msg = f\"{greeting} {mounted} {os.environ['TOKEN']} {os.environ['POD']} {sys.prefix}\"\n"
                      "open('/dev/termination-log', 'w').write(msg)\n"
                      "print('main done')\n"],
             "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                     {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
             "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cfgvol", "mountPath": "/etc/cfg"}]},
        ],
    })
    pod = wait_pod(devnode, namespace, "p", phase_in("Succeeded", "Failed"), what="completion")
    main = statuses(pod)["main"]
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    term = main["state"]["terminated"]
    venv = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", ".venv"))
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert term["message"] == f"hello hello s3cret p {venv}"
    assert term["startedAt"] <= term["finishedAt"]
    inits = statuses(pod, "initContainerStatuses")
    assert [inits[n]["state"]["terminated"]["reason"] for n in ("prepare", "check")] == ["Completed", "Completed"]
    assert inits["prepare"]["state"]["terminated"]["finishedAt"] <= inits["check"]["state"]["terminated"]["startedAt"]
    assert conditions(pod)["Initialized"] == "True" and conditions(pod)["Ready"] == "False"
    assert conditions(pod)["PodScheduled"] == "True"
    assert pod["status"]["podIP"] == pod["status"]["hostIP"] == "127.0.0.1"
    assert main["image"] == "kubeslim/job:dev" and main["imageID"] and main["containerID"].startswith("devnode://")
    assert devnode.log_file(namespace, "p", "prepare").read_text() == "prepared\n"
    assert devnode.log_file(namespace, "p", "main").read_text() == "main done\n"


def test_nonzero_exit_fails_pod_with_log_fallback_and_custom_message_path(devnode, namespace):
    devnode.create_pod(namespace, "fail", {"containers": [
        {"name": "fallback", "image": "busybox", "command": ["sh", "-c", "echo first; echo oops-detail >&2; exit 3"],
         "terminationMessagePolicy": "FallbackToLogsOnError"},
        {"name": "custom", "image": "busybox", "terminationMessagePath": "/var/run/result",
         # The mapped path in the script and TERMINATION_MESSAGE_PATH name the same host file.
         "command": ["sh", "-c", 'echo custom > /var/run/result && test "$TERMINATION_MESSAGE_PATH" = /var/run/result']},
    ]})
    pod = wait_pod(devnode, namespace, "fail", phase_in("Succeeded", "Failed"), what="completion")
    assert pod["status"]["phase"] == "Failed"
    fb = statuses(pod)["fallback"]["state"]["terminated"]
    assert (fb["exitCode"], fb["reason"], fb["message"]) == (3, "Error", "first\noops-detail\n")
    custom = statuses(pod)["custom"]["state"]["terminated"]
    assert (custom["exitCode"], custom["reason"], custom["message"]) == (0, "Completed", "custom\n")


def test_missing_secret_is_create_container_config_error_until_it_appears(devnode, namespace):
    kube = devnode.kube
    devnode.create_pod(namespace, "waits", {"containers": [
        {"name": "main", "image": "busybox", "command": ["sh", "-c", 'test "$KEY" = v1'],
         "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]}]})

    def waiting_with(message):
        def pred(pod):
            st = statuses(pod).get("main", {}).get("state", {}).get("waiting") or {}
            return st.get("reason") == "CreateContainerConfigError" and st.get("message") == message
        return pred

    pod = wait_pod(devnode, namespace, "waits", waiting_with('secret "later" not found'), what="config error")
    assert pod["status"]["phase"] == "Pending"
    kube.create(ns_path(namespace, "secrets"), {"metadata": {"name": "later"}, "data": {"other": b64("x")}})
    wait_pod(devnode, namespace, "waits", waiting_with(f"couldn't find key k in Secret {namespace}/later"),
             what="missing key error")
    kube.merge_patch(ns_path(namespace, "secrets", "later"), {"data": {"k": b64("v1")}})
    pod = wait_pod(devnode, namespace, "waits", phase_in("Succeeded", "Failed"), what="recovery")
    assert pod["status"]["phase"] == "Succeeded", pod["status"]


def test_deleting_a_pod_kills_its_processes(devnode, namespace):
    # The shell and its child ignore SIGTERM: the agent must SIGKILL them after the grace period.
    devnode.create_pod(namespace, "sleeper", {"terminationGracePeriodSeconds": 1, "containers": [
        {"name": "main", "image": "busybox", "command": ["sh", "-c", 'trap "" TERM; sleep 300 & wait']}]})
    pod = wait_pod(devnode, namespace, "sleeper", phase_in("Running"), what="Running")
    pid = int(statuses(pod)["main"]["containerID"].rsplit("-", 1)[1])
    time.sleep(0.3)
    assert len(session_pids(pid)) == 2  # sh and sleep
    started = time.monotonic()
    devnode.kube.delete(ns_path(namespace, "pods", "sleeper"))
    deadline = time.monotonic() + 20
    while devnode.pod(namespace, "sleeper") is not None:
        assert time.monotonic() < deadline, "pod not removed after deletion"
        time.sleep(0.2)
    assert session_pids(pid) == []
    assert time.monotonic() - started < 10


def test_memory_limit_is_enforced_as_oom_kill(devnode, namespace):
    devnode.create_pod(namespace, "hog", {"containers": [
        {"name": "main", "image": "busybox", "resources": {"limits": {"memory": "64Mi"}},
         "command": ["python3", "-c", "import time\nx = bytearray(300 * 2**20)\ntime.sleep(30)"]}]})
    pod = wait_pod(devnode, namespace, "hog", phase_in("Succeeded", "Failed"), what="OOM kill")
    term = statuses(pod)["main"]["state"]["terminated"]
    assert (pod["status"]["phase"], term["exitCode"], term["reason"]) == ("Failed", 137, "OOMKilled")


def test_on_failure_restarts_the_container(devnode, namespace):
    # The first run fails, the restart succeeds: restartCount and lastState as kubelet reports them.
    devnode.create_pod(namespace, "retry", {"restartPolicy": "OnFailure",
                                            "volumes": [{"name": "state", "emptyDir": {}}],
                                            "containers": [
        {"name": "main", "image": "busybox", "volumeMounts": [{"name": "state", "mountPath": "/state"}],
         "command": ["sh", "-c", "test -e /state/once && exit 0; touch /state/once; exit 7"]}]})
    pod = wait_pod(devnode, namespace, "retry", phase_in("Succeeded", "Failed"), what="completion")
    main = statuses(pod)["main"]
    assert pod["status"]["phase"] == "Succeeded"
    assert main["restartCount"] == 1 and main["lastState"]["terminated"]["exitCode"] == 7


def test_a_batch_job_is_scheduled_onto_the_dev_node_and_completes(devnode, namespace):
    kube = devnode.kube
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "quant"},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never",
               "nodeSelector": {"kubernetes.io/hostname": devnode.name},
               "tolerations": devnode.tolerations,
               "containers": [{"name": "job", "image": "kubeslim/job:dev",
                               "command": ["python", "-c", "print('quantized')"],
                               "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}
    kube.create(ns_path(namespace, "jobs", group="batch/v1"), job)
    deadline = time.monotonic() + 90
    while True:
        got = kube.get(ns_path(namespace, "jobs", "quant", group="batch/v1"))
        conds = {c["type"]: c["status"] for c in got.get("status", {}).get("conditions") or []}
        if conds.get("Complete") == "True" or conds.get("Failed") == "True":
            break
        assert time.monotonic() < deadline, f"Job not finished: {got.get('status')}"
        time.sleep(0.5)
    assert conds.get("Complete") == "True", got["status"]
    pods = kube.get(ns_path(namespace, "pods"), {"labelSelector": "job-name=quant"})["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [devnode.name]
    assert devnode.log_file(namespace, pods[0]["metadata"]["name"], "job").read_text() == "quantized\n"


def test_active_deadline_kills_the_pod(devnode, namespace):
    devnode.create_pod(namespace, "slow", {"activeDeadlineSeconds": 1, "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "main", "image": "busybox",
                                                           "command": ["sleep", "300"]}]})
    pod = wait_pod(devnode, namespace, "slow", phase_in("Succeeded", "Failed"), timeout=20, what="deadline")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert statuses(pod)["main"]["state"]["terminated"]["exitCode"] == 143


def test_force_deleted_pod_has_its_processes_killed(devnode, namespace):
    devnode.create_pod(namespace, "forced", {"containers": [{"name": "main", "image": "busybox",
                                                             "command": ["sleep", "300"]}]})
    pod = wait_pod(devnode, namespace, "forced", phase_in("Running"), what="Running")
    pid = int(statuses(pod)["main"]["containerID"].rsplit("-", 1)[1])
    devnode.kube.delete(ns_path(namespace, "pods", "forced"), {"gracePeriodSeconds": 0})
    deadline = time.monotonic() + 10
    while session_pids(pid):
        assert time.monotonic() < deadline, "process of a force-deleted pod still running"
        time.sleep(0.1)
