"""The devenv's real node (devenv/node.sh): a kubelet that runs our images in containerd, advertises
GPUs like a GPU-operator node, and changes none of the host's sysctls while it runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


def test_node_is_ready_with_gpus_and_the_gpu_taint(kubectl, real_node):
    node = json.loads(kubectl("get", "node", real_node.name, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == node["status"]["allocatable"]["nvidia.com/gpu"] != "0"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {a["type"]: a["address"] for a in node["status"]["addresses"]}["InternalIP"] == real_node.ip
    # kwok leaves it alone: it manages only the nodes annotated as fake.
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})


def test_kubelet_and_kube_proxy_leave_the_host_sysctls_alone(devenv):
    # They write these at start; in their mount namespace the files are stand-ins.
    before = json.loads((devenv.dir / "node" / "host-before.json").read_text())["sysctls"]
    for key in ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys",
                "net/ipv4/conf/all/route_localnet"):
        assert Path(f"/proc/sys/{key}").read_text().split() == before[key].split(), key


def test_a_hardened_pod_with_secret_env_and_emptydir_runs_and_reports(kubectl, namespace, node_images, real_node, wait_for):
    kubectl("-n", namespace, "create", "secret", "generic", "pod-secret", "--from-literal=token=opensesame")
    script = ("import os, pathlib; p = pathlib.Path('/work/out.txt'); p.write_text(os.environ['TOKEN'][::-1]); "
              "print('wrote', len(p.read_text()), 'bytes'); pathlib.Path('/dev/termination-log').write_text('done:' + p.read_text())")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hardened", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "nodeSelector": real_node.scheduling["nodeSelector"], "tolerations": real_node.scheduling["tolerations"],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": node_images.job, "imagePullPolicy": "Never",
                "command": ["python", "-c", script],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "pod-secret", "key": "token"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
            }],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))

    def finished():
        st = json.loads(kubectl("-n", namespace, "get", "pod", "hardened", "-o", "json").stdout)["status"]
        return st if st.get("phase") in ("Succeeded", "Failed") else None
    st = wait_for(finished, timeout=120, what="the pod to finish")
    assert st["phase"] == "Succeeded", st
    assert st["qosClass"] == "Guaranteed"
    assert st["containerStatuses"][0]["state"]["terminated"]["message"] == "done:emasesnepo"
    assert kubectl("-n", namespace, "logs", "hardened").stdout.strip() == "wrote 10 bytes"
