"""What the API server says when it refuses to create the Job, in the QuantizationJob's terms: its
causes name fields of the Job build_job made, which `spec_field` maps back to the spec fields the
user set."""
from __future__ import annotations

import dataclasses
import re

from kubeslim_api import reasons

from .. import constants as c
from ..constants import Obj
from .verdict import clause

# Answers no retry of the same Job can change: the spec of this generation builds a Job the API
# server refuses (400: it cannot be decoded, e.g. an int32 overflow; 413: too large; 422: invalid).
PERMANENT_CREATE_ERRORS = (400, 413, 422)
# 403 is the cluster's verdict rather than the spec's (RBAC, an exhausted ResourceQuota, a
# terminating namespace, a policy webhook): it can be lifted without a new generation, so the
# operator says why and tries again.
REFUSED_CREATE_ERRORS = (403,)
_JOB_FIELD = re.compile(r"(?<![\w/-])((?:metadata|spec)(?:\.\w+|\[[^\]\s]*\])+)")
# A body the API server cannot decode names the Go field: "... into Go struct field JobSpec.spec.x of type int32".
_GO_FIELD = re.compile(r"Go struct field \w+\.")

_CONTAINER = r"spec\.template\.spec\.(?:initContainers|containers)\[\d+\]"
# Where build_job puts each spec field, read backwards: a field path in the API server's answer
# about the Job → the QuantizationJob field the user set. The first full match wins.
_SPEC_FIELD_OF_JOB_FIELD: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"spec\.template\.spec\.(tolerations|affinity|nodeSelector|priorityClassName|runtimeClassName)([.\[].*)?", r"spec.scheduling.\1\2"),
    # Pod template metadata errors name spec.template.labels (no .metadata) in batch/v1 validation.
    (r"spec\.template\.(?:metadata\.)?(labels|annotations)([.\[].*)?", r"spec.podMetadata.\1\2"),
    # The Job's own labels are the operator's, except the Kueue queue name.
    (r"metadata\.labels([.\[].*)?", "spec.scheduling.queueName"),
    (r"spec\.(backoffLimit|activeDeadlineSeconds|ttlSecondsAfterFinished)", r"spec.runPolicy.\1"),
    (_CONTAINER + r"\.resources([.\[].*)?", "spec.resources"),
    (_CONTAINER + r"\.env\[\d+\]\.valueFrom\.secretKeyRef\.name", "spec.storage.credentialsSecret.name"),
    (_CONTAINER + r"\.env\[\d+\]\.valueFrom\.secretKeyRef\..*", "spec.storage.credentialsSecret"),
    (r"spec\.template\.spec\.volumes\[\d+\]\.projected\..*", "spec.storage.credentials.webIdentity.audience"),
    (r"spec\.template\.spec\.volumes\[\d+\]\.configMap\.name", "spec.storage.caBundle.configMapName"),
    (r"spec\.template\.spec\.volumes\[\d+\]\.configMap\..*", "spec.storage.caBundle.key"),
))


def spec_field(job_field: str) -> str | None:
    """The QuantizationJob field behind a field of the Job build_job makes; None for the operator's own."""
    for pattern, replacement in _SPEC_FIELD_OF_JOB_FIELD:
        if pattern.fullmatch(job_field):
            return pattern.sub(replacement, job_field, count=1)
    return None

@dataclasses.dataclass(frozen=True)
class JobRejection:
    final: bool            # Failed for this generation; otherwise Pending and retried
    reason: str
    message: str


def _in_spec_terms(text: str) -> str:
    """Job field paths in an API server message → the QuantizationJob fields they came from."""
    return _JOB_FIELD.sub(lambda m: spec_field(m.group(1)) or m.group(1), _GO_FIELD.sub("field ", text))


def _rejection_detail(body: Obj | str) -> str:
    doc = body if isinstance(body, dict) else {"message": str(body)}
    causes = ((doc.get("details") or {}).get("causes")) or []
    # Each cause names one field; the three stage containers share env and resources, so their
    # causes repeat once mapped.
    parts = list(dict.fromkeys(_in_spec_terms(f"{x['field']}: {x.get('message', '')}" if x.get("field") else x.get("message", ""))
                               for x in causes if x.get("field") or x.get("message")))
    return clause("; ".join(parts) or _in_spec_terms(doc.get("message") or "no reason given"), c.REJECTION_DETAIL_MAX_CHARS)


def job_rejection(code: int, body: Obj | str, job_name: str) -> JobRejection | None:
    """What a refused Job create means for the QuantizationJob; None for a transient error (5xx,
    429, …) that the reconciler retries with a backoff."""
    if code in PERMANENT_CREATE_ERRORS:
        return JobRejection(True, reasons.JOB_REJECTED,
                            f"The API server rejected Job {job_name}: {_rejection_detail(body)}; fix the spec and apply again.")
    if code in REFUSED_CREATE_ERRORS:
        return JobRejection(False, reasons.JOB_FORBIDDEN,
                            f"The API server refused to create Job {job_name}: {_rejection_detail(body)}; the operator "
                            "tries again.")
    return None
