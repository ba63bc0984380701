"""What the chart's admission-policy tests against the real API server share
(test_chart_plumbing.py, test_chart_shipping.py): the job image and spec the operator's Job is
built from, the rendered policy applied for a test, a server-side dry-run `create` as the
release's operator ServiceAccount, and the two verdicts read from it."""
from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import yaml

from kubeslim_api.spec import parse_spec
from kubeslim_dev.devenv import token_kubeconfig

JOB_IMAGE = "registry.example/kubeslim-job:9.9.9"
JOB_IMAGE_SETS = (f"job.image.repository={JOB_IMAGE.split(':')[0]}", f"job.image.tag={JOB_IMAGE.split(':')[1]}")
SPEC = parse_spec({
    "model": {"builtin": {"architecture": "mobilenet_v3_small"}, "inputShape": [3, 224, 224]},
    "data": {"calibration": {"uri": "s3://d/train/", "listFile": "t.txt"}, "evaluation": {"uri": "s3://d/val/", "listFile": "v.txt"}},
    "output": {"uri": "s3://m/out/"},
})

Create = Callable[[dict], subprocess.CompletedProcess]     # a server-side dry-run create of a Job: its kubectl run


@contextmanager
def applied(kubectl, docs: list[dict]) -> Iterator[None]:
    """`docs` applied for the block and deleted after it (the admission policy and its binding are
    cluster-scoped: the test's namespace going away would not remove them)."""
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    kubectl("apply", "-f", "-", input=manifest)
    try:
        yield
    finally:
        kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest)


def dry_run_as(service_account: str, namespace: str, kubectl, devenv, tmp_path: Path) -> Create:
    """Server-side dry-run `create` of a Job with the token of `service_account` (created here, and
    allowed to create Jobs in `namespace` and nothing else): the admission policy judges it as the
    operator's own request."""
    kubectl("create", "serviceaccount", service_account, "-n", namespace)
    kubectl("create", "role", "create-jobs", "--verb=create", "--resource=jobs.batch", "-n", namespace)
    kubectl("create", "rolebinding", "create-jobs", "--role=create-jobs", f"--serviceaccount={namespace}:{service_account}",
            "-n", namespace)
    token = kubectl("create", "token", service_account, "-n", namespace, "--duration=10m").stdout.strip()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(token_kubeconfig(devenv.kubeconfig, token)))
    path.chmod(0o600)

    def create(job: dict) -> subprocess.CompletedProcess:
        return subprocess.run([devenv.kubectl, "--kubeconfig", str(path), "create", "--dry-run=server", "-o", "name", "-f", "-"],
                              input=json.dumps(job), capture_output=True, text=True, timeout=60)
    return create


def denied(create: Create, job: dict, wait_for) -> subprocess.CompletedProcess:
    """`create`'s refusal of `job`, waited for: the API server takes a new policy up within a few seconds."""
    return wait_for(lambda: (p := create(job)).returncode != 0 and p, timeout=30, what="the policy to deny")


def assert_admitted(create: Create, job: dict, foreign: dict, wait_for) -> None:
    """`job` is admitted once the policy is in force, which is once it denies `foreign` (an admission
    before that would only show the policy not loaded yet)."""
    wait_for(lambda: create(foreign).returncode != 0, timeout=30, what="the policy to be in force")
    proc = create(job)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"job.batch/{job['metadata']['name']}"
