"""The local devenv (devenv/, `make devenv`) as tests and benchmarks reach it: the files it writes
under .devenv/, the guard that refuses any other kubeconfig, an S3 client for its server, and its
commands (status, outages on purpose, images, Kueue). devenv/README.md is the contract; this module
is the one place outside devenv/ that knows where its scripts are."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[3]
DEVENV_DIR = Path(os.environ.get("KUBESLIM_DEVENV_DIR", REPO / ".devenv")).resolve()
DEVENV_EXTENSION = "kubeslim.io/devenv"
SCRIPTS = REPO / "devenv"


class NotADevenv(RuntimeError):
    """A kubeconfig that devenv/devenv.sh did not write: tests refuse to use it."""


def check_devenv_kubeconfig(path: Path, devenv_dir: Path = DEVENV_DIR) -> str:
    """Return the devenv id if ``path`` is the kubeconfig the running devenv wrote, else raise.

    Devenv writes its id to .devenv/devenv-id and into the kubeconfig twice: the cluster's
    name (kubeslim-devenv-<id>) and a cluster extension; the server must be on loopback.
    """
    import yaml

    path = Path(path).resolve()
    if path != (devenv_dir / "kubeconfig").resolve():
        raise NotADevenv(f"{path} is not {devenv_dir}/kubeconfig: tests only run against the devenv (make devenv)")
    id_file = devenv_dir / "devenv-id"
    if not id_file.is_file():
        raise NotADevenv(f"{id_file} is missing: this kubeconfig was not written by a running devenv")
    devenv_id = id_file.read_text().strip()
    cfg = yaml.safe_load(path.read_text()) or {}
    ctx = next((c["context"] for c in cfg.get("contexts", []) if c.get("name") == cfg.get("current-context")), None)
    if ctx is None:
        raise NotADevenv(f"{path} has no current context")
    cluster = next((c for c in cfg.get("clusters", []) if c.get("name") == ctx.get("cluster")), None)
    if cluster is None or cluster["name"] != f"kubeslim-devenv-{devenv_id}":
        raise NotADevenv(f"{path}: current cluster is not kubeslim-devenv-{devenv_id}")
    ext = {e.get("name"): e.get("extension") or {} for e in cluster["cluster"].get("extensions", [])}
    if ext.get(DEVENV_EXTENSION, {}).get("id") != devenv_id:
        raise NotADevenv(f"{path}: cluster lacks the {DEVENV_EXTENSION} extension with id {devenv_id}")
    host = urlparse(cluster["cluster"].get("server", "")).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise NotADevenv(f"{path}: server {host} is not on loopback")
    return devenv_id


def info(devenv_dir: Path = DEVENV_DIR) -> dict[str, Any]:
    """.devenv/devenv.json: the binaries, ports and node of the running devenv."""
    return json.loads((devenv_dir / "devenv.json").read_text())


def s3_env(devenv_dir: Path = DEVENV_DIR) -> dict[str, str]:
    """.devenv/s3.env: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION."""
    return dict(line.split("=", 1) for line in (devenv_dir / "s3.env").read_text().splitlines() if "=" in line)


def s3_client(env: dict[str, str], **overrides: str):
    """A boto3 S3 client for the settings in `env` (path-style, as the devenv's server needs)."""
    import boto3
    from botocore.config import Config

    env = {**env, **overrides}
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def remove_bucket(s3, name: str) -> None:
    """Delete bucket `name` with every object in it (S3 refuses to delete a bucket that holds any):
    how tests and benchmarks clean up the buckets they made."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def token_kubeconfig(admin_kubeconfig: Path, token: str) -> dict[str, Any]:
    """A kubeconfig for the devenv's API server that authenticates with `token` only (a
    ServiceAccount's), without the admin's client certificate: a request made with it has exactly
    that ServiceAccount's rights and is seen by admission as that ServiceAccount."""
    import yaml

    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    ctx = next(x["context"] for x in admin["contexts"] if x["name"] == admin["current-context"])
    cluster = next(x for x in admin["clusters"] if x["name"] == ctx["cluster"])
    return {"apiVersion": "v1", "kind": "Config", "current-context": "token",
            "clusters": [{"name": "devenv", "cluster": cluster["cluster"]}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "token", "context": {"cluster": "devenv", "user": "token"}}]}


class DevenvCommandFailed(RuntimeError):
    """A devenv command exited non-zero; the message carries the end of what it printed."""


def _run(script: str, *args: str, check: bool = True, capture: bool = True,
         timeout: float | None = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SCRIPTS / script), *args], capture_output=capture, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        output = ((proc.stdout or "") + (proc.stderr or ""))[-3000:]
        raise DevenvCommandFailed(f"devenv/{script} {' '.join(args)} failed (exit {proc.returncode})"
                                  + (f": {output}" if output else ""))
    return proc


def status() -> subprocess.CompletedProcess:
    """`make devenv-status`: exit 0 only when every component answers and the real node is Ready;
    its output says which is down."""
    return _run("devenv.sh", "status", check=False, timeout=None)


def is_up() -> bool:
    return status().returncode == 0


def outage(action: str, component: str) -> None:
    """stop (held down: the supervisor leaves it), start or restart one devenv component on purpose
    (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok-controller, s3, prometheus,
    registry); returns once done, after start and restart once the component answers."""
    _run("devenv.sh", action, component)


@contextmanager
def node_daemons_stopped(devenv_dir: Path = DEVENV_DIR):
    """The real node's kubelet and containerd stopped for the block (its pods' containers keep
    running in their shims, as on a node cut off from the control plane), started again after it
    whatever happens. Image builds wait meanwhile: one would lose its containerd mid-build. Yields
    the time.monotonic() at which the stop began (after that wait)."""
    with open(devenv_dir / "images.lock", "w") as images_lock:
        fcntl.flock(images_lock, fcntl.LOCK_EX)
        t_stop = time.monotonic()
        try:
            _run("node.sh", "stop-daemons")
            yield t_stop
        finally:
            _run("node.sh", "start-daemons")


def push_images() -> None:
    """`make images` on a running devenv: rebuild the images and the chart if their inputs changed
    since the last push (seconds when nothing did), push them to the devenv registry and rewrite
    .devenv/images.env and values-images.yaml. Output goes to the terminal (minutes cold)."""
    _run("images.sh", capture=False, timeout=None)


def run_kueue(action: str) -> subprocess.CompletedProcess:
    """`make kueue` (up) / `kueue-down` (down) / `kueue-status` (status: its exit code says whether
    Kueue answers; the others raise on failure). up builds Kueue first when it is not cached
    (minutes; output to the terminal)."""
    return _run("kueue.sh", action, check=action != "status", capture=action == "status", timeout=None)
