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
METRIC_ERROR = "MetricError"             # spec.verification.custom raised or returned no number
# results.onnx.reason (spec.output.onnx) and the OnnxExported condition's: none fails the run.
ONNX_EXPORTED = "Exported"
ONNX_UNSUPPORTED_OPERATORS = "UnsupportedOperators"    # paddle2onnx has no converter for an op
ONNX_CONVERSION_FAILED = "ConversionFailed"            # paddle2onnx failed otherwise
ONNX_RUNTIME_FAILED = "OnnxRuntimeFailed"              # onnxruntime could not load or run the file
ONNX_ACCURACY_MISMATCH = "OnnxAccuracyMismatch"        # beyond spec.output.onnx.maxAccuracyDelta

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
WORK_VOLUME_FULL = "WorkVolumeFull"     # the kubelet evicted the pod: /work outgrew the chart's job.workSizeLimit
STAGE_FAILED = "StageFailed"
BAD_RESULT = "BadResultMessage"
DEADLINE = "DeadlineExceeded"
NODE_LOST = "NodeLost"                   # the deadline ended the run while its pod sat on a node that stopped answering
RETRYING = "Retrying"
RESULT_LOST = "ResultUnavailable"
# A Job that names a Kueue queue (spec.scheduling.queueName), suspended until Kueue admits it.
QUEUED = "Queued"                        # waiting for quota (Argo CD: Suspended)
LOCAL_QUEUE_NOT_FOUND = "LocalQueueNotFound"
QUEUE_INADMISSIBLE = "QueueInadmissible" # Kueue's own verdict, relayed (a ClusterQueue missing or stopped, ...)
KUEUE_UNAVAILABLE = "KueueUnavailable"   # suspended for a queue, but the cluster serves no Kueue Workloads
