"""The parallel sweep (spec.quantization.parallelism > 1 with several algos): what the operator's Job
and the job image agree on.

The design, and why it is the simplest that holds:
- ONE Indexed Job (completionMode Indexed) of K+1 completions for K algos, `parallelism` pods at a
  time, every pod the usual three stages (export, calibrate, verify) from the usual template. The
  pod's role comes from JOB_COMPLETION_INDEX, which the Job controller sets in every container:
  index i < K is candidate algos[i]; index K (FINAL) verifies and publishes. One Job means the
  operator's idempotency is unchanged (one deterministic name per generation: a restarted operator
  meets a 409 and reads the Job back) and so is its status derivation: the Job controller's
  Complete/Failed is still the run's end, podFailurePolicy still fails the whole Job at once on a
  bad-input exit of any index, backoffLimit still counts every failed pod. A second Job (export,
  then the sweep) would need the operator to sequence Jobs and to read two of them.
- Export once: index 0 exports and puts the fp32 model and export.json under the run's S3 work
  prefix (KUBESLIM_SWEEP_URI: spec.output.uri + .kubeslim-sweep/<uid>-g<generation>/, so a
  re-created object never reads an older run's files; FINAL removes it once it has published, a
  failed run leaves it for inspection); every other index waits for it and
  downloads it. Pods share no volume (an RWX volume is no given), and S3 is what every pod of the
  run already reaches with its own credentials; the operator holds none and moves no data.
- Candidate i calibrates algos[i] alone and puts its model and its CalibratedCandidate there (the
  .json written last is the marker). An algo that fails to quantize is a candidate with its error,
  as in a sequential sweep, not a failed pod.
- FINAL waits for the K candidates, then runs the unchanged verify stage over all of them in one
  process: the same measurements, the same chooser (verify.choose), the same gate, fallback and
  speed-aware steps, the same upload. So the choice equals a sequential sweep's by construction
  (latency ties are timed on one pod, one after another, as there); what runs in parallel is
  calibration, the sweep's long part (KL 167-389 s against verify's tens of seconds). Its verify
  termination message is the run's result, read by the operator from the FINAL index's pod.
- With parallelism 1 (the default) or one algo nothing changes: the plain one-pod Job.
"""
from __future__ import annotations

from .spec import QuantizationSpec

# Set by the Job controller in every container of an Indexed Job's pod.
INDEX_ENV = "JOB_COMPLETION_INDEX"
# Set by the operator on sweep Jobs only: the run's S3 work prefix.
URI_ENV = "KUBESLIM_SWEEP_URI"
URI_DIR = ".kubeslim-sweep"            # under spec.output.uri

# The layout under the work prefix.
EXPORT_PREFIX = "export/"              # model.pdmodel, model.pdiparams, then export.json (the marker)
CANDIDATES_PREFIX = "candidates/"      # <algo>/model.pdmodel|.pdiparams, then <algo>.json (the marker)


def work_uri(output_uri: str, uid: str, generation: int) -> str:
    """The run's S3 work prefix."""
    return f"{output_uri.rstrip('/')}/{URI_DIR}/{uid}-g{generation}/"


def is_sweep(q: QuantizationSpec) -> bool:
    """Whether the run is a parallel sweep: more than one algo, more than one pod at a time."""
    return q.parallelism > 1 and len(q.algos) > 1


def final_index(q: QuantizationSpec) -> int:
    """The index that verifies and publishes: the one after the candidates."""
    return len(q.algos)


def completions(q: QuantizationSpec) -> int:
    return final_index(q) + 1


def pods_at_once(q: QuantizationSpec) -> int:
    """The Job's parallelism: no more pods than indexes."""
    return min(q.parallelism, completions(q))


def role(index: int, q: QuantizationSpec) -> str:
    """How status messages name an index: `candidate KL (index 2)` or `final (index 4)`."""
    if 0 <= index < final_index(q):
        return f"candidate {q.algos[index]} (index {index})"
    return f"final (index {index})"
