"""Names shared by the operator's modules: API coordinates, label and annotation keys, container
names, phases, stages, condition types and reasons. Nothing here has behaviour."""
from __future__ import annotations

GROUP = "kubeslim.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "QuantizationJob"
PLURAL = "quantizationjobs"

MANAGER = "kubeslim-operator"            # app.kubernetes.io/managed-by, event reportingController
EVENT_SOURCE = "kubeslim-operator"

# Labels on the Job and on its pod template. The QuantizationJob's name may be up to 253
# characters (too long for a label value), so children are found by the owner's uid, and the
# name travels as an annotation.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_OWNER_UID = "kubeslim.io/quantizationjob-uid"
LABEL_GENERATION = "kubeslim.io/generation"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_OWNER_NAME = "kubeslim.io/quantizationjob"
COMPONENT = "quantization"
# The server-side selector the operator watches Jobs and Pods with.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
# Set by the Job controller on its pods.
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"

# The pod: two init containers and one container, so kubelet itself reports the stage.
STAGE_CONTAINERS = ("export", "calibrate", "verify")
STAGE_NAMES = {"export": "Exporting", "calibrate": "Calibrating", "verify": "Verifying"}

WORK_DIR = "/work"
HOME_DIR = "/home/kubeslim"
CA_DIR = "/etc/kubeslim/ca"
CA_FILE = "ca.crt"

# Phases (status.phase).
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
FINAL_PHASES = (SUCCEEDED, FAILED)

# Condition types.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SCHEDULED = "Scheduled"
ACCURACY_GATE = "AccuracyGate"
CONFIG_AVAILABLE = "CredentialsReady"   # the credentials Secret / key and the CA ConfigMap exist
CONDITION_ORDER = (READY, RECONCILING, STALLED, SCHEDULED, CONFIG_AVAILABLE, ACCURACY_GATE)

# Reasons (status.reason, condition reasons, event reasons).
R_INVALID_SPEC = "InvalidSpec"
R_JOB_CREATED = "JobCreated"
R_JOB_NAME_CONFLICT = "JobNameConflict"
R_JOB_REJECTED = "JobRejected"          # 400/413/422 on creating the Job: final for the generation
R_JOB_FORBIDDEN = "JobForbidden"        # 403 on creating the Job: retried
R_UNSCHEDULABLE = "Unschedulable"
R_SECRET_NOT_FOUND = "SecretNotFound"
R_SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
R_CONFIGMAP_NOT_FOUND = "ConfigMapNotFound"
R_CONFIGMAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"
R_CONTAINER_CONFIG = "CreateContainerConfigError"
R_IMAGE_PULL = "ImagePullBackOff"
R_OOM = "OOMKilled"
R_STAGE_FAILED = "StageFailed"
R_BAD_RESULT = "BadResultMessage"
R_GATE_FAILED = "AccuracyGateFailed"
R_GATE_PASSED = "AccuracyGatePassed"
R_DEADLINE = "DeadlineExceeded"
R_BACKOFF = "BackoffLimitExceeded"
R_RETRYING = "Retrying"
R_RESULT_LOST = "ResultUnavailable"
R_JOB_DELETED = "JobDeleted"

# batch/v1 podFailurePolicy actions the operator reasons about, and the Job's default backoffLimit.
POD_FAILURE_FAIL_JOB = "FailJob"
POD_FAILURE_COUNT = "Count"
POD_FAILURE_IGNORE = "Ignore"
JOB_DEFAULT_BACKOFF_LIMIT = 6

# Waiting reasons kubelet reports for image problems (all end the run: the image comes from the
# operator's configuration, so no change to the CR can fix them).
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
