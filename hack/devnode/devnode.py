#!/usr/bin/env python3
"""kubeslim dev node agent: a DEVELOPMENT AND TEST TOOL, not part of the product.

It registers a Node that declares GPU capacity and runs the pods the scheduler binds to it as
local processes, the way kubelet would (init containers in order, then containers; env from
Secrets/ConfigMaps/fields; volumes as directories; termination messages; pod status). There is
no container isolation: see hack/devnode/README.md for what is mapped and how.

    .venv/bin/python hack/devnode/devnode.py --kubeconfig .devenv/kubeconfig --node-name kubeslim-dev-0
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubeapi import ApiError, Kube, ns_path  # noqa: E402
from podplan import (  # noqa: E402
    DEFAULT_TERMINATION_MESSAGE_PATH, PATH_MAP_ENV, SERVICE_ACCOUNT_DIR, TERMINATION_MESSAGE_ENV, ConfigError, ImageRule,
    MountError, PathMap, in_cluster_kubeconfig, match_image, parse_quantity, path_map_env, resolve_argv, resolve_env,
    termination_message, termination_message_limit, volume_files,
)
from podstatus import ContainerState, micro_now, now, pod_phase, pod_status  # noqa: E402
import procs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("devnode")

# API trouble (apiserver restarting, a 5xx): retry the step, never fail the pod for it.
TRANSIENT = (ApiError, urllib3.exceptions.HTTPError)
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TICK = 0.1
LEASE_DURATION = 40


@dataclass
class Options:
    node_name: str
    state_dir: Path
    gpus: str = "1"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product: str = "kubeslim-dev-cpu"
    cpu: str = str(os.cpu_count() or 2)
    memory: str = ""
    pods: str = "110"
    images: list[ImageRule] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict] = field(default_factory=list)
    heartbeat: float = 10.0
    restart_backoff: float = 2.0
    max_restart_backoff: float = 40.0
    kubeconfig: str | None = None

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"


def _total_memory() -> str:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1])}Ki"
    return "8Gi"


# ---------------------------------------------------------------------------------------------
# Pods


@dataclass
class Running:
    proc: subprocess.Popen
    log_path: Path
    log_offset: int
    term_file: Path
    mem_limit: int | None
    oom: bool = False
    next_mem_check: float = 0.0


class PodWorker(threading.Thread):
    """Runs one pod from bind to a terminal phase (or deletion); the only writer of its status."""

    def __init__(self, agent: "Agent", pod: dict):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.kube = agent.kube
        self.pod = pod
        self.uid, self.ns, self.podname = meta["uid"], meta["namespace"], meta["name"]
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.specs = {c["name"]: c for c in spec.get("initContainers", []) + spec.get("containers", [])}
        self.init = [ContainerState(c["name"], c["image"], init=True) for c in spec.get("initContainers", [])]
        self.main = [ContainerState(c["name"], c["image"]) for c in spec.get("containers", [])]
        self.dir = agent.opts.pods_dir / self.uid
        self.volume_dirs: dict[str, Path] = {}
        self.sandbox_ready = False
        self.sandbox_retry_at = 0.0
        self.running: dict[str, Running] = {}
        self.retry_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.start_time = (pod.get("status") or {}).get("startTime") or now()
        self.started_mono = time.monotonic()
        self.published: dict | None = None
        self.publish_retry_at = 0.0
        self.reason = self.message = ""
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.deleted = False  # gone from the API
        self.stop_reason = ""  # agent shutdown

    # -- called from the watch thread
    def update(self, pod: dict) -> None:
        with self.lock:
            self.pod = pod
        self.wake.set()

    def gone(self) -> None:
        self.deleted = True
        self.wake.set()

    def shutdown(self, reason: str) -> None:
        self.stop_reason = reason
        self.wake.set()

    # -- the pod's own thread
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: worker crashed", self.ns, self.podname)
            self._kill_all(grace=0)
        finally:
            self.agent.worker_done(self)

    def _run(self) -> None:
        log.info("pod %s/%s: starting (uid %s)", self.ns, self.podname, self.uid)
        ads = self.pod["spec"].get("activeDeadlineSeconds")
        while True:
            if self.deleted:
                self._kill_all(grace=2)
                self._cleanup()
                log.info("pod %s/%s: deleted, processes stopped", self.ns, self.podname)
                return
            with self.lock:
                pod = self.pod
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            if self.stop_reason:
                self._kill_all(grace=2)
                self._finish_lost(self.stop_reason)
                return
            if ads is not None and time.monotonic() - self.started_mono > ads:
                self._kill_all(grace=int(pod["spec"].get("terminationGracePeriodSeconds", 30)))
                self.reason, self.message = "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
                self._publish("Failed")
                return
            self._step()
            phase = pod_phase(self.restart_policy, self.init, self.main)
            self._publish(phase)
            if phase in ("Succeeded", "Failed"):
                log.info("pod %s/%s: %s", self.ns, self.podname, phase)
                return
            self.wake.wait(TICK)
            self.wake.clear()

    def _step(self) -> None:
        if not self.sandbox_ready:
            if time.monotonic() < self.sandbox_retry_at:
                return
            try:
                self._prepare_volumes()
                self.sandbox_ready = True
            except TRANSIENT as e:
                log.warning("pod %s/%s: volume setup will be retried: %s", self.ns, self.podname, e)
                self.sandbox_retry_at = time.monotonic() + 1
                return
            except MountError as e:
                for c in self.init + self.main:
                    c.reason, c.message = "ContainerCreating", str(e)
                self.agent.event(self.pod, "Warning", "FailedMount", f"MountVolume.SetUp failed: {e}")
                self.sandbox_retry_at = time.monotonic() + 2
                return
            for c in self.init[1:] + self.main:
                c.reason, c.message = "PodInitializing", ""
        for c in self.init:
            if c.succeeded:
                continue
            self._drive(c)
            if not c.succeeded:
                return
        for c in self.main:
            self._drive(c)

    def _drive(self, c: ContainerState) -> None:
        if c.state == "running":
            self._poll(c)
        if c.state == "waiting" and time.monotonic() >= self.retry_at.get(c.name, 0):
            self._start(c)

    # -- volumes

    def _prepare_volumes(self) -> None:
        pod = self.pod
        for vol in pod["spec"].get("volumes") or []:
            host = self.dir / "volumes" / vol["name"]
            if "hostPath" in vol:
                self.volume_dirs[vol["name"]] = Path(vol["hostPath"]["path"])
                continue
            files = volume_files(pod, vol, self.agent.getter, self._token)
            host.mkdir(parents=True, exist_ok=True)
            for rel, (data, mode) in (files or {}).items():
                target = host / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                target.chmod(mode & 0o777)
            self.volume_dirs[vol["name"]] = host

    def _token(self, src: dict) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [src["audience"]] if src.get("audience") else None,
                         "expirationSeconds": src.get("expirationSeconds", 3607),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.podname, "uid": self.uid}}}
        try:
            resp = self.kube.create(ns_path(self.ns, "serviceaccounts", sa, "token"), body)
        except ApiError as e:
            raise MountError(f"failed to fetch token: {e}") from e
        return resp["status"]["token"]

    # -- containers

    def _container_dir(self, name: str) -> Path:
        return self.dir / "containers" / name

    def _pathmap(self, spec: dict) -> PathMap:
        pm = PathMap()
        cdir = self._container_dir(spec["name"])
        for m in spec.get("volumeMounts") or []:
            host = self.volume_dirs.get(m["name"])
            if host is None:
                raise ConfigError(f"devnode: volumeMount {m['name']!r} has no volume")
            if m.get("subPath"):
                host = host / m["subPath"]
                if not host.exists():
                    host.mkdir(parents=True, exist_ok=True)
            pm.add(m["mountPath"], str(host))
        # A container's own /tmp and workingDir live in its private directory unless mounted.
        if pm.lookup("/tmp") is None:
            pm.add("/tmp", str(cdir / "tmp"))
        wd = spec.get("workingDir")
        if wd and pm.lookup(wd) is None:
            pm.add(wd, str(cdir / "rootfs" / wd.lstrip("/")))
        pm.add(spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH, str(cdir / "termination-log"))
        return pm

    def _start(self, c: ContainerState) -> None:
        spec = self.specs[c.name]
        opts = self.agent.opts
        cdir = self._container_dir(c.name)
        rule = match_image(spec["image"], opts.images)
        try:
            pm = self._pathmap(spec)
            env = resolve_env(self.pod, spec, self.agent.getter, pm, self.agent.allocatable)
            full = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(cdir / "home"),
                "HOSTNAME": self.podname,
                "LANG": os.environ.get("LANG", "C.UTF-8"),
            }
            full.update(env)
            if rule:
                full["PATH"] = rule.bin_dir + ":" + full["PATH"]
                full.setdefault("VIRTUAL_ENV", str(Path(rule.bin_dir).parent))
            full["TMPDIR"] = pm.lookup("/tmp")
            full[TERMINATION_MESSAGE_ENV] = pm.lookup(spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)
            full[PATH_MAP_ENV] = path_map_env(pm)
            sa_dir = pm.lookup(SERVICE_ACCOUNT_DIR)
            if sa_dir and "KUBECONFIG" not in full:
                kubeconfig = cdir / "in-cluster.kubeconfig"
                cdir.mkdir(parents=True, exist_ok=True)
                kubeconfig.write_text(in_cluster_kubeconfig(self.agent.kube.host, sa_dir))
                kubeconfig.chmod(0o600)
                full["KUBECONFIG"] = str(kubeconfig)
            argv = resolve_argv(spec, rule, full, pm)
        except TRANSIENT as e:
            log.warning("pod %s/%s: container %s start will be retried: %s", self.ns, self.podname, c.name, e)
            self.retry_at[c.name] = time.monotonic() + 1
            return
        except ConfigError as e:
            if c.reason != "CreateContainerConfigError" or c.message != str(e):
                self.agent.event(self.pod, "Warning", "Failed", f"Error: {e}", c.name)
            c.state, c.reason, c.message = "waiting", "CreateContainerConfigError", str(e)
            self.retry_at[c.name] = time.monotonic() + 1
            return
        for d in (cdir / "home", Path(full["TMPDIR"])):
            d.mkdir(parents=True, exist_ok=True)
        cwd = pm.lookup(spec["workingDir"]) if spec.get("workingDir") else str(cdir / "rootfs")
        Path(cwd).mkdir(parents=True, exist_ok=True)
        term_file = Path(full[TERMINATION_MESSAGE_ENV])
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_bytes(b"")
        log_path = opts.logs_dir / f"{self.ns}_{self.podname}_{c.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if c.last_terminated:
            c.restart_count += 1
        with open(log_path, "ab") as logf:
            offset = logf.tell()
            try:
                proc = subprocess.Popen(argv, env=full, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                started = now()
                c.state, c.reason, c.exit_code = "terminated", "StartError", 128
                c.message = f'failed to create containerd task: exec: "{argv[0]}": {e.strerror}'
                c.started_at = c.finished_at = started
                self.agent.event(self.pod, "Warning", "Failed", f"Error: {c.message}", c.name)
                self._after_exit(c)
                return
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        # Recorded so that an agent restarted after a crash can kill what this one left running.
        (cdir / "pid").write_text(f"{proc.pid} {procs.start_time(proc.pid)}\n")
        self.running[c.name] = Running(proc, log_path, offset, term_file,
                                       int(parse_quantity(limit)) if limit else None)
        c.state, c.reason, c.message = "running", "", ""
        c.started_at, c.finished_at, c.exit_code = now(), None, None
        c.container_id = f"devnode://{self.uid[:8]}-{c.name}-{proc.pid}"
        c.image_id = "devnode://" + (rule.bin_dir if rule else "host")
        log.info("pod %s/%s: container %s started, pid %d, log %s", self.ns, self.podname, c.name, proc.pid, log_path)
        self.agent.event(self.pod, "Normal", "Started", f"Started container {c.name} (pid {proc.pid}, log {log_path})", c.name)

    def _poll(self, c: ContainerState) -> None:
        r = self.running[c.name]
        rc = r.proc.poll()
        if rc is None:
            if r.mem_limit and time.monotonic() >= r.next_mem_check:
                r.next_mem_check = time.monotonic() + 0.5
                if procs.session_rss(r.proc.pid) > r.mem_limit:
                    log.warning("pod %s/%s: container %s over its memory limit, killing", self.ns, self.podname, c.name)
                    r.oom = True
                    procs.kill_session(r.proc.pid, signal.SIGKILL)
            return
        # As when a container's init process exits: the rest of its processes go too.
        procs.kill_session(r.proc.pid, signal.SIGKILL)
        del self.running[c.name]
        exit_code = rc if rc >= 0 else 128 - rc
        c.state, c.exit_code, c.finished_at = "terminated", exit_code, now()
        c.reason = "OOMKilled" if r.oom else ("Completed" if exit_code == 0 else "Error")
        spec = self.specs[c.name]
        try:
            file_bytes = r.term_file.read_bytes()
        except OSError:
            file_bytes = b""
        c.message = termination_message(file_bytes, _read_from(r.log_path, r.log_offset), exit_code,
                                        spec.get("terminationMessagePolicy", "File"), termination_message_limit(self.pod))
        log.info("pod %s/%s: container %s exited %d (%s)", self.ns, self.podname, c.name, exit_code, c.reason)
        self._after_exit(c)

    def _after_exit(self, c: ContainerState) -> None:
        restart = self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and c.exit_code != 0)
        if not restart:
            c.final = True
            return
        delay = self.backoff.get(c.name, self.agent.opts.restart_backoff)
        self.backoff[c.name] = min(delay * 2, self.agent.opts.max_restart_backoff)
        self.retry_at[c.name] = time.monotonic() + delay
        c.last_terminated = c.terminated_dict()
        c.state, c.reason = "waiting", "CrashLoopBackOff"
        c.message = f"back-off {delay:g}s restarting failed container={c.name} pod={self.podname}_{self.ns}({self.uid})"

    # -- teardown

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every running container, SIGKILL what is left after `grace` seconds."""
        for r in self.running.values():
            procs.kill_session(r.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            for name in list(self.running):
                if self.running[name].proc.poll() is not None:
                    self._poll(self._state(name))
            time.sleep(0.05)
        for r in self.running.values():
            procs.kill_session(r.proc.pid, signal.SIGKILL)
        for name in list(self.running):
            self.running[name].proc.wait()
            self._poll(self._state(name))
        for c in self.init + self.main:
            c.final = True
            if c.state == "waiting" and c.last_terminated:
                c.state = "terminated"
                c.__dict__.update({"exit_code": c.last_terminated.get("exitCode"),
                                   "reason": c.last_terminated.get("reason", "Error"),
                                   "message": c.last_terminated.get("message", ""),
                                   "started_at": c.last_terminated.get("startedAt"),
                                   "finished_at": c.last_terminated.get("finishedAt")})

    def _state(self, name: str) -> ContainerState:
        return next(c for c in self.init + self.main if c.name == name)

    def _terminate(self, pod: dict) -> None:
        """deletionTimestamp set: stop the containers within the grace period, report the final
        status, then remove the pod (kubelet's final delete with grace period 0)."""
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        log.info("pod %s/%s: terminating (grace %ss)", self.ns, self.podname, grace)
        if self.running:
            self.agent.event(pod, "Normal", "Killing", "Stopping container(s) " + ", ".join(self.running))
        self._kill_all(grace=float(grace))
        ok = all(c.succeeded for c in self.init + self.main)
        self._publish("Succeeded" if ok else "Failed")
        self.agent.finalize_delete(self.ns, self.podname, self.uid)
        self._cleanup()

    def _finish_lost(self, message: str) -> None:
        self.reason, self.message = "NodeShutdown", message
        self._publish("Failed")

    def _cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _publish(self, phase: str) -> None:
        with self.lock:
            pod = self.pod
        status = pod_status(pod, phase, self.sandbox_ready, self.init, self.main, self.start_time,
                            self.reason, self.message)
        if status == self.published or time.monotonic() < self.publish_retry_at:
            return
        try:
            updated = self.kube.merge_patch(ns_path(self.ns, "pods", self.podname, "status"),
                                            {"metadata": {"uid": self.uid}, "status": status})
        except ApiError as e:
            if e.status in (404, 409):
                self.deleted = True
            else:
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.podname, e)
                self.publish_retry_at = time.monotonic() + 1
            return
        except Exception as e:  # apiserver unreachable: retry shortly
            log.warning("pod %s/%s: status update failed: %s", self.ns, self.podname, e)
            self.publish_retry_at = time.monotonic() + 1
            return
        with self.lock:
            if int(updated["metadata"]["resourceVersion"]) >= int(self.pod["metadata"]["resourceVersion"]):
                self.pod = updated
        # Re-render against the pod we just wrote so unchanged conditions compare equal.
        self.published = pod_status(updated, phase, self.sandbox_ready, self.init, self.main, self.start_time,
                                    self.reason, self.message)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(offset, size - 64 * 1024))
            return f.read()
    except OSError:
        return b""


# ---------------------------------------------------------------------------------------------
# The agent: node, lease, pod watch


class Agent:
    def __init__(self, kube: Kube, opts: Options):
        self.kube = kube
        self.opts = opts
        self.allocatable = {"cpu": opts.cpu, "memory": opts.memory or _total_memory(), "pods": opts.pods,
                            opts.gpu_resource: opts.gpus, "ephemeral-storage": "100Gi"}
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.finalized: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.events: queue.Queue = queue.Queue()
        self.node_uid = ""
        self.ready_since = now()
        self.kubeconfig_stamp = _file_stamp(opts.kubeconfig) if opts.kubeconfig else None

    # -- node

    def node_object(self) -> dict:
        o = self.opts
        labels = {
            "kubernetes.io/hostname": o.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": o.gpu_product,
            "nvidia.com/gpu.count": o.gpus,
            "kubeslim.io/devnode": "true",
            **o.labels,
        }
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": o.node_name, "labels": labels,
                             "annotations": {"kubeslim.io/devnode-logs": str(o.logs_dir)}},
                "spec": {"taints": [GPU_TAINT, *o.taints]}}

    def node_status(self) -> dict:
        hb = now()

        def cond(ctype: str, status: str, reason: str, message: str) -> dict:
            return {"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": hb, "lastTransitionTime": self.ready_since}

        return {
            "capacity": self.allocatable, "allocatable": self.allocatable,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "devnode has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "devnode has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "devnode has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "devnode agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.opts.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                         "osImage": "kubeslim devnode (local processes)", "containerRuntimeVersion": "devnode://0.1",
                         "kubeletVersion": self.server_version, "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": _arch()},
        }

    def register(self) -> None:
        self.server_version = (self.kube.get("/version") or {}).get("gitVersion", "v0.0.0")
        want = self.node_object()
        path = f"/api/v1/nodes/{self.opts.node_name}"
        node = self.kube.get_or_none(path)
        if node is None:
            node = self.kube.create("/api/v1/nodes", want)
            log.info("registered node %s", self.opts.node_name)
        else:
            ours = {t["key"] for t in want["spec"]["taints"]}
            taints = [t for t in (node["spec"].get("taints") or []) if t["key"] not in ours] + want["spec"]["taints"]
            node = self.kube.merge_patch(path, {"metadata": {"labels": want["metadata"]["labels"],
                                                             "annotations": want["metadata"]["annotations"]},
                                                "spec": {"taints": taints}})
            log.info("node %s exists, labels and taints updated", self.opts.node_name)
        self.node_uid = node["metadata"]["uid"]
        self.heartbeat_once()

    def heartbeat_once(self) -> None:
        name = self.opts.node_name
        self.kube.merge_patch(f"/api/v1/nodes/{name}/status", {"status": self.node_status()})
        lease_path = ns_path("kube-node-lease", "leases", name, group="coordination.k8s.io/v1")
        try:
            self.kube.merge_patch(lease_path, {"spec": {"holderIdentity": name, "renewTime": micro_now(),
                                                        "leaseDurationSeconds": LEASE_DURATION}})
        except ApiError as e:
            if e.status != 404:
                raise
            self.kube.create(ns_path("kube-node-lease", "leases", group="coordination.k8s.io/v1"), {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.node_uid}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": micro_now()}})

    def _heartbeat_loop(self) -> None:
        next_beat = time.monotonic() + self.opts.heartbeat
        while not self.stopping.wait(1):
            if self.opts.kubeconfig and _file_stamp(self.opts.kubeconfig) != self.kubeconfig_stamp:
                # `make devenv-down` (or a new devenv) removed or replaced the kubeconfig: this
                # cluster is gone, so stop rather than run pods nobody can see.
                log.warning("%s removed or changed: the cluster is gone, stopping", self.opts.kubeconfig)
                self.stopping.set()
                return
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.opts.heartbeat
            try:
                self.heartbeat_once()
            except Exception as e:  # keep beating: a transient apiserver error must not stop the node
                log.warning("heartbeat failed: %s", e)

    # -- lookups for env and volumes

    def getter(self, kind: str, namespace: str, name: str) -> dict | None:
        resource = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        return self.kube.get_or_none(ns_path(namespace, resource, name))

    # -- events (best effort, off the pod threads)

    def event(self, pod: dict, etype: str, reason: str, message: str, container: str | None = None) -> None:
        self.events.put((pod, etype, reason, message, container))

    def _event_loop(self) -> None:
        while True:
            item = self.events.get()
            if item is None:
                return
            pod, etype, reason, message, container = item
            meta = pod["metadata"]
            ref = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                   "uid": meta["uid"]}
            if container:
                ref["fieldPath"] = f"spec.containers{{{container}}}"
            ts = now()
            body = {"metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
                    "involvedObject": ref, "reason": reason, "message": message[:1024], "type": etype,
                    "source": {"component": "kubelet", "host": self.opts.node_name},
                    "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
                    "reportingComponent": "kubelet", "reportingInstance": self.opts.node_name}
            try:
                self.kube.create(ns_path(meta["namespace"], "events"), body)
            except Exception as e:
                log.debug("event not recorded: %s", e)

    # -- pods

    def dispatch(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        status = pod.get("status") or {}
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if uid in self.finished or status.get("phase") in ("Succeeded", "Failed"):
            self.finished.add(uid)
            if deleting:
                self.finalize_delete(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
            return
        if _was_started(status):
            # Started by an earlier agent process: its processes died with it (as after a reboot).
            self.mark_lost(pod)
            return
        if deleting:
            self.finalize_delete(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
            return
        if self.stopping.is_set():
            return
        worker = PodWorker(self, pod)
        with self.lock:
            self.workers[uid] = worker
        worker.start()

    def deleted(self, uid: str) -> None:
        with self.lock:
            worker = self.workers.get(uid)
        if worker is not None:
            worker.gone()
        self.finished.discard(uid)
        self.finalized.discard(uid)

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)
        if not worker.deleted:
            self.finished.add(worker.uid)

    def finalize_delete(self, namespace: str, name: str, uid: str) -> None:
        if uid in self.finalized:
            return
        self.finalized.add(uid)
        try:
            self.kube.delete(ns_path(namespace, "pods", name),
                             {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", namespace, name, e)

    def mark_lost(self, pod: dict) -> None:
        meta = pod["metadata"]
        log.info("pod %s/%s: was running before this agent started; marking it Failed", meta["namespace"], meta["name"])
        msg = "The container could not be located when the pod was terminated"
        statuses = {}
        for key in ("initContainerStatuses", "containerStatuses"):
            out = []
            for cs in (pod.get("status") or {}).get(key) or []:
                cs = dict(cs)
                if "terminated" not in (cs.get("state") or {}):
                    cs["lastState"] = {}
                    cs["state"] = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown", "message": msg,
                                                  "finishedAt": now()}}
                    cs["ready"] = cs["started"] = False
                out.append(cs)
            statuses[key] = out
        try:
            self.kube.merge_patch(ns_path(meta["namespace"], "pods", meta["name"], "status"),
                                  {"status": {"phase": "Failed", "reason": "NodeShutdown",
                                              "message": "devnode agent restarted; the pod's processes were lost",
                                              **statuses}})
        except ApiError as e:
            log.warning("pod %s/%s: could not mark lost: %s", meta["namespace"], meta["name"], e)
        self.finished.add(meta["uid"])
        if meta.get("deletionTimestamp"):
            self.finalize_delete(meta["namespace"], meta["name"], meta["uid"])

    def _watch_loop(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.opts.node_name}"}
        while not self.stopping.is_set():
            try:
                listing = self.kube.get("/api/v1/pods", selector)
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.dispatch(pod)
                with self.lock:
                    known = set(self.workers)
                for uid in (known | self.finished) - seen:
                    self.deleted(uid)
                rv = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for ev in self.kube.watch("/api/v1/pods", dict(selector, resourceVersion=rv), timeout=60):
                        if self.stopping.is_set():
                            return
                        etype, obj = ev["type"], ev["object"]
                        if etype == "ERROR":
                            raise ApiError(obj.get("code", 500), obj, "WATCH", "/api/v1/pods")
                        rv = obj["metadata"]["resourceVersion"]
                        if etype == "BOOKMARK":
                            continue
                        if etype == "DELETED":
                            self.deleted(obj["metadata"]["uid"])
                        else:
                            self.dispatch(obj)
            except Exception as e:
                if self.stopping.is_set():
                    return
                level = logging.INFO if isinstance(e, ApiError) and e.status == 410 else logging.WARNING
                log.log(level, "pod watch restarting: %s", e)
                self.stopping.wait(1)

    def run(self) -> None:
        self.opts.logs_dir.mkdir(parents=True, exist_ok=True)
        # Pods of an earlier run are lost (as after a reboot): kill what it left, forget its state.
        for pid_file in self.opts.pods_dir.glob("*/containers/*/pid"):
            if procs.kill_recorded(pid_file):
                log.info("killed leftover process of an earlier agent run (%s)", pid_file)
        shutil.rmtree(self.opts.pods_dir, ignore_errors=True)
        self.register()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._event_loop, name="events", daemon=True).start()
        watcher = threading.Thread(target=self._watch_loop, name="watch", daemon=True)
        watcher.start()
        log.info("node %s ready: %s=%s cpu=%s memory=%s; logs in %s", self.opts.node_name, self.opts.gpu_resource,
                 self.opts.gpus, self.allocatable["cpu"], self.allocatable["memory"], self.opts.logs_dir)
        self.stopping.wait()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("stopping: killing the processes of %d pod(s)", len(self.workers))
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.shutdown("devnode agent stopped")
        for w in workers:
            w.join(timeout=10)
        self.events.put(None)


def _was_started(status: dict) -> bool:
    if status.get("phase") == "Running":
        return True
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if "running" in state or "terminated" in state or cs.get("lastState", {}).get("terminated"):
            return True
    return False


def _file_stamp(path: str) -> str | None:
    """Content hash: `make devenv` on a running devenv rewrites the same kubeconfig (kept),
    a new devenv writes other certificates (stop)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


# ---------------------------------------------------------------------------------------------
# CLI


def parse_image_rule(text: str) -> ImageRule:
    """PATTERN=BIN_DIR[,ENTRYPOINT...]"""
    pattern, _, rest = text.partition("=")
    if not pattern or not rest:
        raise argparse.ArgumentTypeError(f"--image wants PATTERN=BIN_DIR[,ENTRYPOINT...], got {text!r}")
    bin_dir, *entry = rest.split(",")
    return ImageRule(pattern, str(Path(bin_dir).resolve()), entry)


def parse_taint(text: str) -> dict:
    """KEY[=VALUE]:EFFECT"""
    kv, _, effect = text.rpartition(":")
    key, _, value = kv.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise argparse.ArgumentTypeError(f"--taint wants KEY[=VALUE]:EFFECT, got {text!r}")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def main(argv: list[str] | None = None) -> int:
    venv_bin = str(REPO / ".venv" / "bin")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("--context")
    p.add_argument("--node-name", default="kubeslim-dev-0")
    p.add_argument("--state-dir", default=str(REPO / ".devenv" / "devnode"),
                   help="logs/ and per-pod directories (default .devenv/devnode)")
    p.add_argument("--gpus", default="1", help="declared GPU capacity")
    p.add_argument("--gpu-resource", default="nvidia.com/gpu")
    p.add_argument("--cpu", default=str(os.cpu_count() or 2))
    p.add_argument("--memory", default="", help="declared memory (default: this machine's)")
    p.add_argument("--pods", default="110")
    p.add_argument("--image", action="append", type=parse_image_rule, default=[], metavar="PATTERN=BIN_DIR[,ENTRYPOINT]",
                   help="run images matching PATTERN from BIN_DIR; first match wins. Always appended: "
                        f"'*kubeslim*={venv_bin},kubeslim-job' and '*={venv_bin}'")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--taint", action="append", type=parse_taint, default=[], metavar="KEY[=VALUE]:EFFECT",
                   help=f"extra taint (the node always has {GPU_TAINT['key']}={GPU_TAINT['value']}:NoSchedule)")
    p.add_argument("--heartbeat", type=float, default=10.0, help="seconds between Lease renewals and node status")
    p.add_argument("--restart-backoff", type=float, default=2.0, help="first restart delay (OnFailure/Always)")
    p.add_argument("--wait-ready", type=float, metavar="SECONDS",
                   help="do not run: wait until the node is registered and Ready, exit 0 (1 on timeout)")
    p.add_argument("--status", action="store_true", help="do not run: print the node and its pods")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    kube = Kube(a.kubeconfig, a.context)
    if a.wait_ready is not None:
        return 0 if wait_ready(kube, a.node_name, a.wait_ready) else 1
    if a.status:
        return print_status(kube, a.node_name)
    images = a.image + [ImageRule("*kubeslim*", venv_bin, ["kubeslim-job"]), ImageRule("*", venv_bin)]
    opts = Options(node_name=a.node_name, state_dir=Path(a.state_dir).resolve(), gpus=a.gpus,
                   gpu_resource=a.gpu_resource, cpu=a.cpu, memory=a.memory, pods=a.pods, images=images,
                   labels=dict(kv.split("=", 1) for kv in a.label), taints=a.taint, heartbeat=a.heartbeat,
                   restart_backoff=a.restart_backoff, kubeconfig=a.kubeconfig)
    agent = Agent(kube, opts)

    def stop(signum, frame):
        log.info("signal %d", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0


def node_ready(node: dict | None) -> bool:
    if not node:
        return False
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    unreachable = any(t["key"].startswith("node.kubernetes.io/") for t in node["spec"].get("taints") or [])
    return conds.get("Ready") == "True" and not unreachable


def wait_ready(kube: Kube, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if node_ready(kube.get_or_none(f"/api/v1/nodes/{name}")):
                return True
        except Exception as e:
            log.debug("waiting: %s", e)
        if time.monotonic() > deadline:
            print(f"node {name} not Ready after {timeout:g}s", file=sys.stderr)
            return False
        time.sleep(0.5)


def print_status(kube: Kube, name: str) -> int:
    node = kube.get_or_none(f"/api/v1/nodes/{name}")
    if node is None:
        print(f"node {name}: not registered")
        return 1
    taints = ", ".join(f"{t['key']}:{t['effect']}" for t in node["spec"].get("taints") or [])
    print(f"node {name}: {'Ready' if node_ready(node) else 'NotReady'} (taints: {taints})")
    print(f"logs: {node['metadata'].get('annotations', {}).get('kubeslim.io/devnode-logs', '?')}")
    pods = kube.get("/api/v1/pods", {"fieldSelector": f"spec.nodeName={name}"})["items"]
    for pod in pods:
        print(f"  {pod['metadata']['namespace']}/{pod['metadata']['name']}: {(pod.get('status') or {}).get('phase')}")
    return 0 if node_ready(node) else 1


if __name__ == "__main__":
    sys.exit(main())
