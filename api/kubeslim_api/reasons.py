"""Reason codes (CamelCase, machine-readable): status.reason, condition reasons, event reasons
and StageResult.reason. One spelling each; the job's data and storage stages add their own
specific reasons (NoSuchKey, BadNpz, …), which the operator relays unchanged."""
from __future__ import annotations

# Written by the job into its StageResult, read by the operator.
SUCCEEDED = "Succeeded"                  # a stage that finished
INVALID_SPEC = "InvalidSpec"             # also the operator's, for a spec it cannot parse
GATE_FAILED = "AccuracyGateFailed"
OUT_OF_MEMORY = "OutOfMemory"
INTERNAL_ERROR = "InternalError"         # a crash of the job: the message has one line of it
STAGE_ORDER = "StageOrder"               # a stage ran before the one that feeds it

# The operator's own.
GATE_PASSED = "AccuracyGatePassed"
JOB_NAME_CONFLICT = "JobNameConflict"
JOB_REJECTED = "JobRejected"             # 400/413/422 on creating the Job: final for the generation
JOB_FORBIDDEN = "JobForbidden"           # 403 on creating the Job: retried
JOB_DELETED = "JobDeleted"
UNSCHEDULABLE = "Unschedulable"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
CONFIGMAP_NOT_FOUND = "ConfigMapNotFound"
CONFIGMAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"
CONTAINER_CONFIG = "CreateContainerConfigError"
IMAGE_PULL = "ImagePullBackOff"
OOM = "OOMKilled"
STAGE_FAILED = "StageFailed"
BAD_RESULT = "BadResultMessage"
DEADLINE = "DeadlineExceeded"
RETRYING = "Retrying"
RESULT_LOST = "ResultUnavailable"
