"""Dev node agent (hack/devnode): pod -> process plan. Pure functions, no cluster."""
import base64
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "devnode"))

from podplan import (  # noqa: E402
    in_cluster_kubeconfig,
    ConfigError, ImageRule, MountError, PathMap, expand, match_image, parse_quantity, resolve_argv,
    resolve_env, termination_message, termination_message_limit, volume_files,
)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


OBJECTS = {
    ("Secret", "ns", "s3"): {"data": {"AWS_ACCESS_KEY_ID": b64("ak"), "AWS_SECRET_ACCESS_KEY": b64("sk")}},
    ("ConfigMap", "ns", "cfg"): {"data": {"mode": "fast", "dir": "/work/out"}, "binaryData": {"bin": b64("raw")}},
}


def getter(kind, ns, name):
    return OBJECTS.get((kind, ns, name))


def pod(containers, init=(), **spec):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"nodeName": "dev-0", "containers": list(containers), "initContainers": list(init), **spec},
            "status": {}}


PM = PathMap({"/work": "/host/vol/work", "/tmp": "/host/tmp", "/dev/termination-log": "/host/term"})


@pytest.mark.parametrize("text, want", [
    ("/work", "/host/vol/work"),
    ("/work/out/model", "/host/vol/work/out/model"),
    ("--out=/work/out", "--out=/host/vol/work/out"),
    ("PATH=/tmp/bin:/usr/bin", "PATH=/host/tmp/bin:/usr/bin"),
    ("echo hi > /work/a && cat '/tmp/b'", "echo hi > /host/vol/work/a && cat '/host/tmp/b'"),
    ("/workdir/x", "/workdir/x"),
    ("/homework", "/homework"),
    ("s3://bucket/tmp/x", "s3://bucket/tmp/x"),
    ("/dev/termination-log", "/host/term"),
    ("relative/work", "relative/work"),
])
def test_path_rewrite_replaces_mount_paths_standing_as_path_tokens(text, want):
    assert PM.rewrite(text) == want


def test_path_rewrite_single_pass_and_longest_mount_wins():
    pm = PathMap({"/work": "/work/main/.devenv/w", "/work/ca": "/elsewhere/ca"})
    assert pm.rewrite("/work/x") == "/work/main/.devenv/w/x"  # not rewritten twice
    assert pm.rewrite("/work/ca/ca.crt") == "/elsewhere/ca/ca.crt"
    assert pm.lookup("/work/ca/ca.crt") == "/elsewhere/ca/ca.crt"
    assert pm.lookup("/etc/passwd") is None


@pytest.mark.parametrize("text, env, want", [
    ("$(A)/x", {"A": "a"}, "a/x"),
    ("$$(A)", {"A": "a"}, "$(A)"),
    ("$(MISSING)", {}, "$(MISSING)"),
    ("$(A", {"A": "a"}, "$(A"),
    ("cost $5", {}, "cost $5"),
])
def test_expand_follows_kubernetes_rules(text, env, want):
    assert expand(text, env) == want


def test_env_resolves_values_refs_fields_and_resources_in_order():
    c = {"name": "main", "image": "kubeslim/job:dev",
         "resources": {"limits": {"memory": "1Gi", "cpu": "1500m"}},
         "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
         "env": [
             {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}},
             {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
             {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
             {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
             {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
             {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
             {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
             {"name": "OUT", "value": "/work/$(POD)"},
             {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
         ]}
    env = resolve_env(pod([c]), c, getter, PM)
    assert env == {"CFG_mode": "fast", "CFG_dir": "/host/vol/work/out", "KEY": "ak", "MODE": "fast", "POD": "p", "NODE": "dev-0", "APP": "x", "IP": "127.0.0.1", "MEM_MI": "1024",
                   "CPU": "2", "OUT": "/host/vol/work/p"}


@pytest.mark.parametrize("ref, message", [
    ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
    ({"secretKeyRef": {"name": "s3", "key": "nokey"}}, "couldn't find key nokey in Secret ns/s3"),
    ({"configMapKeyRef": {"name": "missing", "key": "k"}}, 'configmap "missing" not found'),
    ({"configMapKeyRef": {"name": "cfg", "key": "nokey"}}, "couldn't find key nokey in ConfigMap ns/cfg"),
    # kubelet reads only .data for env, never .binaryData
    ({"configMapKeyRef": {"name": "cfg", "key": "bin"}}, "couldn't find key bin in ConfigMap ns/cfg"),
])
def test_missing_reference_raises_kubelet_message(ref, message):
    c = {"name": "main", "image": "x", "env": [{"name": "V", "valueFrom": ref}]}
    with pytest.raises(ConfigError) as err:
        resolve_env(pod([c]), c, getter, PM)
    assert str(err.value) == message


def test_envfrom_missing_secret_is_a_config_error_unless_optional():
    c = {"name": "main", "image": "x", "envFrom": [{"secretRef": {"name": "gone"}}]}
    with pytest.raises(ConfigError, match='secret "gone" not found'):
        resolve_env(pod([c]), c, getter, PM)
    c["envFrom"][0]["secretRef"]["optional"] = True
    assert resolve_env(pod([c]), c, getter, PM) == {}


def test_argv_maps_image_and_resolves_command_in_its_bin_dir():
    rules = [ImageRule("*kubeslim*", "/venv/bin", ["kubeslim-job"]), ImageRule("*", "/venv/bin")]
    exists = {"/venv/bin/kubeslim-job", "/venv/bin/python", "/bin/sh"}.__contains__
    c = {"name": "m", "image": "ghcr.io/x/kubeslim-job:1.0", "args": ["run", "--out=/work/$(POD)"]}
    rule = match_image(c["image"], rules)
    assert resolve_argv(c, rule, {"POD": "p", "PATH": "/bin"}, PM, exists) == \
        ["/venv/bin/kubeslim-job", "run", "--out=/host/vol/work/p"]
    c = {"name": "m", "image": "python:3.11", "command": ["/usr/local/bin/python", "-c", "print(1)"]}
    assert resolve_argv(c, match_image(c["image"], rules), {}, PM, exists)[0] == "/venv/bin/python"
    c = {"name": "m", "image": "busybox", "command": ["sh", "-c", "echo > /tmp/x"]}
    assert resolve_argv(c, match_image(c["image"], rules), {"PATH": "/bin"}, PM, exists) == \
        ["/bin/sh", "-c", "echo > /host/tmp/x"]
    with pytest.raises(ConfigError, match="no command"):
        resolve_argv({"name": "m", "image": "busybox"}, rules[1], {}, PM, exists)


def test_configmap_secret_projected_volumes_become_files():
    p = pod([{"name": "m", "image": "x"}])
    files = volume_files(p, {"name": "v", "configMap": {"name": "cfg", "items": [{"key": "mode", "path": "sub/mode"}]}}, getter)
    assert files == {"sub/mode": (b"fast", 0o644)}
    files = volume_files(p, {"name": "v", "secret": {"secretName": "s3", "defaultMode": 0o400}}, getter)
    assert files == {"AWS_ACCESS_KEY_ID": (b"ak", 0o400), "AWS_SECRET_ACCESS_KEY": (b"sk", 0o400)}
    proj = {"name": "kube-api-access", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "cfg", "items": [{"key": "mode", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
    files = volume_files(p, proj, getter, token=lambda src: "tok")
    assert {k: v[0] for k, v in files.items()} == {"token": b"tok", "ca.crt": b"fast", "namespace": b"ns"}
    assert volume_files(p, {"name": "e", "emptyDir": {}}, getter) is None
    with pytest.raises(MountError, match='secret "gone" not found'):
        volume_files(p, {"name": "v", "secret": {"secretName": "gone"}}, getter)
    with pytest.raises(MountError, match="unsupported volume type"):
        volume_files(p, {"name": "v", "persistentVolumeClaim": {"claimName": "c"}}, getter)


@pytest.mark.parametrize("file, log, code, policy, want", [
    (b"result", b"log", 0, "File", "result"),
    (b"", b"log", 1, "File", ""),
    (b"", b"a\nb\nlast\n", 1, "FallbackToLogsOnError", "a\nb\nlast\n"),
    (b"", b"log", 0, "FallbackToLogsOnError", ""),
    (b"msg", b"log", 1, "FallbackToLogsOnError", "msg"),
    (b"x" * 5000 + b"END", b"", 0, "File", ("x" * 5000 + "END")[-4096:]),
    (b"", "".join(f"{i}\n" for i in range(200)).encode(), 1, "FallbackToLogsOnError",
     "".join(f"{i}\n" for i in range(120, 200))),
    (b"", b"y" * 3000, 2, "FallbackToLogsOnError", "y" * 2048),
])
def test_termination_message_like_kubelet(file, log, code, policy, want):
    assert termination_message(file, log, code, policy, 4096) == want


def test_termination_message_budget_is_split_between_containers():
    assert termination_message_limit(pod([{"name": "a"}])) == 4096
    assert termination_message_limit(pod([{"name": "a"}] * 2, init=[{"name": "i"}] * 2)) == 3072


@pytest.mark.parametrize("q, want", [("1Gi", 2**30), ("500m", 0.5), ("2", 2), ("1e3", 1000), ("128974848", 128974848), ("1M", 10**6)])
def test_parse_quantity(q, want):
    assert float(parse_quantity(q)) == want


def test_in_cluster_kubeconfig_uses_the_mounted_token_ca_and_namespace(tmp_path):
    import json

    from kubernetes import config as k8s_config
    from kubernetes.client import Configuration

    (tmp_path / "token").write_text("tok-123")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("kubeslim-system\n")
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(in_cluster_kubeconfig("https://127.0.0.1:16443", str(tmp_path)))
    doc = json.loads(kubeconfig.read_text())
    assert doc["contexts"][0]["context"]["namespace"] == "kubeslim-system"
    cfg = Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    assert cfg.host == "https://127.0.0.1:16443"
    assert cfg.api_key["BearerToken"] == "Bearer tok-123"
    assert cfg.ssl_ca_cert == str(tmp_path / "ca.crt")
