"""The operator's ClusterRole is least privilege: every other operator test runs the operator
with exactly these rights (a ServiceAccount token); here `kubectl auth can-i` proves what it
cannot do."""
from __future__ import annotations

import pytest

from operator_harness import crd, operator_identity  # noqa: F401


def can_i(kubectl, user: str, verb: str, resource: str, namespace: str = "default") -> bool:
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    r = kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={user}", check=False)
    return r.stdout.strip() == "yes"


@pytest.mark.parametrize("verb,resource", [
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"),
    ("create", "pods/exec"), ("get", "pods/exec"), ("create", "pods/attach"),
    ("create", "pods"), ("delete", "pods"), ("create", "secrets"),
    ("patch", "quantizationjobs.kubeslim.io"), ("update", "quantizationjobs.kubeslim.io"),
    ("delete", "quantizationjobs.kubeslim.io"), ("create", "quantizationjobs.kubeslim.io"),
    ("update", "quantizationjobs.kubeslim.io/finalizers"),
    ("patch", "jobs.batch"), ("update", "jobs.batch"),
    ("create", "configmaps"), ("list", "configmaps"),
    ("create", "serviceaccounts/token"), ("impersonate", "serviceaccounts"),
    ("create", "roles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"), ("list", "namespaces"),
    # Leader election has a Role of its own in the operator's namespace (the chart's), for its Lease only.
    ("create", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io"), ("get", "leases.coordination.k8s.io"),
])
def test_cannot(crd, kubectl, operator_identity, namespace, verb, resource):
    assert not can_i(kubectl, operator_identity["user"], verb, resource, namespace)


@pytest.mark.parametrize("verb,resource", [
    ("list", "quantizationjobs.kubeslim.io"), ("watch", "quantizationjobs.kubeslim.io"),
    ("patch", "quantizationjobs.kubeslim.io/status"),
    ("create", "jobs.batch"), ("delete", "jobs.batch"), ("get", "jobs.batch"), ("watch", "jobs.batch"),
    ("list", "pods"), ("watch", "pods"), ("get", "configmaps"), ("create", "events"),
    ("get", "pods/log"),      # status.progress: the job pod's progress lines (it holds no token)
])
def test_can(crd, kubectl, operator_identity, namespace, verb, resource):
    assert can_i(kubectl, operator_identity["user"], verb, resource, namespace)
