"""Names shared by the operator's modules: API coordinates, label and annotation keys, stage
display names, phases and condition types. Nothing here has behaviour. What the job image shares
(stages, exit codes, paths, reason codes) is in kubeslim_api."""
from __future__ import annotations

from typing import Any

Obj = dict[str, Any]                    # a Kubernetes object as JSON (the API's, or trimmed)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"      # metav1.Time: status timestamps, event times

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
# Kueue (optional: a cluster without it runs Jobs at once). It labels the Workload it makes for a
# Job with the Job's uid. v1beta1 is the version Kueue stores (read without its conversion webhook)
# and the one every Kueue release since v0.3 serves.
KUEUE_WORKLOADS_PATH = "/apis/kueue.x-k8s.io/v1beta1/namespaces/{namespace}/workloads"
LABEL_KUEUE_JOB_UID = "kueue.x-k8s.io/job-uid"
ANNOTATION_OWNER_NAME = "kubeslim.io/quantizationjob"
COMPONENT = "quantization"
# The server-side selector the operator watches Jobs and Pods with.
CHILD_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
# Set by the Job controller on its pods.
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"    # an Indexed Job's pods (a parallel sweep)

# The pod: two init containers and one container named after kubeslim_api.contract.STAGES, so
# kubelet itself reports the stage; status.stage names each one while it runs.
STAGE_NAMES = {"export": "Exporting", "calibrate": "Calibrating", "verify": "Verifying"}

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
ONNX_EXPORTED = "OnnxExported"          # spec.output.onnx only; False warns, the run still succeeds
CONDITION_ORDER = (READY, RECONCILING, STALLED, SCHEDULED, CONFIG_AVAILABLE, ACCURACY_GATE, ONNX_EXPORTED)

# Reasons: kubeslim_api.reasons (shared with the job).

# batch/v1 podFailurePolicy actions the operator reasons about, and the Job's default backoffLimit.
POD_FAILURE_FAIL_JOB = "FailJob"
POD_FAILURE_COUNT = "Count"
POD_FAILURE_IGNORE = "Ignore"
JOB_DEFAULT_BACKOFF_LIMIT = 6

# Waiting reasons kubelet reports for image problems (all end the run: the image comes from the
# operator's configuration, so no change to the CR can fix them).
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")

# -- lengths and timeouts -----------------------------------------------------------------------

# One API request (kube.py), unless the caller gives its own. Long enough for a LIST on a busy API
# server; short enough that a connection that hangs costs one reconcile pass, not the operator.
API_REQUEST_TIMEOUT_SECONDS = 30.0
# Of an error body that is not JSON (a proxy's HTML page), what ApiError and the logs keep.
API_ERROR_EXCERPT_CHARS = 200

# Event fields, cut to the lengths the API server validates for Events (reason and
# reportingInstance 128, note/message 1024); a longer value would make it refuse the whole Event.
EVENT_REASON_MAX_CHARS = 128
EVENT_MESSAGE_MAX_CHARS = 1024
EVENT_REPORTING_INSTANCE_MAX_CHARS = 128
# The QuantizationJob's name as the prefix of its Events' names: with "." and 16 hex digits
# appended the name stays under the 253 characters of a DNS subdomain.
EVENT_NAME_PREFIX_MAX_CHARS = 200

# Foreign text quoted in status.message (status/): enough for the cause, short enough that the
# message stays readable in `kubectl get`/`describe`.
KUBELET_MESSAGE_MAX_CHARS = 200      # kubelet's last line (a container's config error, a crash's log tail)
INNER_MESSAGE_MAX_CHARS = 160        # a message quoted inside a longer sentence (an image pull error, an earlier eviction)
KUEUE_MESSAGE_MAX_CHARS = 300        # a Kueue Workload condition's message (why it waits)
REJECTION_DETAIL_MAX_CHARS = 800     # the API server's causes for refusing the Job, one per field, mapped to spec fields
