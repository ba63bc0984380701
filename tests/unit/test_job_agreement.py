"""verification.metric agreement without a server: which data it needs, how agreement and the
gate come out of a scored evaluation set, and the CPU threads verify times with (the cgroup quota
a pod runs under)."""
from __future__ import annotations

import numpy as np
import pytest

from kubeslim_api.spec import Preprocess, SpecError, parse_spec
from kubeslim_job import data, inference

from tests.invalid_specs import VALID_SPEC

pytestmark = pytest.mark.unit

PREFIX_EVAL = {"uri": "s3://datasets/val/", "format": "imagePrefix"}


def _spec(metric: str, evaluation: dict | None = None):
    data_spec = {**VALID_SPEC["data"], **({"evaluation": evaluation} if evaluation else {})}
    return parse_spec({**VALID_SPEC, "data": data_spec, "verification": {"metric": metric}})


@pytest.mark.parametrize("metric, evaluation_labels", [("top1", True), ("top5", True), ("agreement", False)])
def test_only_agreement_reads_no_evaluation_labels(metric, evaluation_labels):
    spec = _spec(metric)
    assert spec.needs_labels("evaluation") is evaluation_labels
    assert spec.needs_labels("calibration") is False


def test_unlabelled_image_prefix_evaluates_under_agreement_only():
    assert _spec("agreement", PREFIX_EVAL).data.evaluation.format == "imagePrefix"
    with pytest.raises(SpecError, match="spec.data.evaluation.format: .*or spec.verification.metric agreement"):
        _spec("top1", PREFIX_EVAL)


@pytest.mark.parametrize("predictions, reference, expected", [
    ([1, 2, 3, 4], [1, 2, 3, 4], 1.0),
    ([1, 2, 3, 4], [1, 2, 0, 0], 0.5),
    ([0, 0, 0], [1, 1, 1], 0.0),
    ([7], [7], 1.0),
])
def test_agreement_is_the_share_of_equal_top1_classes(predictions, reference, expected):
    assert inference.agreement(np.array(predictions), np.array(reference)) == expected


def test_agreement_refuses_sets_of_different_sizes():
    with pytest.raises(ValueError, match="3 predictions with 2"):
        inference.agreement(np.array([1, 2, 3]), np.array([1, 2]))


def _evalset(tmp_path, labels: list[int] | None) -> data.TensorFile:
    """Five 1x2x2 samples whose first pixel encodes the class a fake model predicts."""
    ys = labels if labels is not None else [data.NO_LABEL] * 5
    samples = (({"x": np.full((1, 2, 2), float(i % 3), np.float32)}, y) for i, y in enumerate(ys))
    return data._write(str(tmp_path / "eval"), samples, data.LoadStats(source="mem"), "k")


def _logits(shift: int):
    """A fake model: class (first pixel + shift) mod 3 wins."""
    def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cls = (feeds["x"][:, 0, 0, 0].astype(int) + shift) % 3
        return {"logits": np.eye(3, dtype=np.float32)[cls]}
    return infer


def test_score_without_labels_reports_agreement_and_no_accuracy(tmp_path):
    evalset = _evalset(tmp_path, None)
    assert not evalset.labelled
    ref = inference.score(_logits(0), evalset, batch_size=2)
    assert ref.top1 is None and ref.top5 is None and ref.correct is None and ref.agreement is None
    assert ref.predictions.tolist() == [0, 1, 2, 0, 1]
    same = inference.score(_logits(0), evalset, batch_size=2, reference=ref.predictions)
    shifted = inference.score(_logits(1), evalset, batch_size=4, reference=ref.predictions)
    assert same.agreement == 1.0 and shifted.agreement == 0.0


def test_score_with_labels_reports_both(tmp_path):
    evalset = _evalset(tmp_path, [0, 1, 2, 2, 2])
    assert evalset.labelled
    ref = inference.score(_logits(0), evalset, batch_size=2)
    assert ref.top1 == 0.6 and ref.correct == 3
    # a model that differs from fp32 on k samples can move top-1 by at most k / n
    other = inference.score(lambda x: _logits(0)(x) if x["x"].shape[0] == 2 else _logits(1)(x), evalset, 2, ref.predictions)
    assert other.agreement == 0.8 and abs(other.top1 - ref.top1) <= 1 - other.agreement + 1e-9


@pytest.mark.parametrize("files, expected", [
    ({}, None),                                                                  # no cgroup files: unknown
    ({inference.CGROUP_V2_CPU_MAX: "max 100000\n"}, None),                           # v2, unlimited
    ({inference.CGROUP_V2_CPU_MAX: "150000 100000\n"}, 1.5),                         # v2, 1.5 CPUs
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
    ({"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000"}, 0.5),
    ({inference.CGROUP_V2_CPU_MAX: "garbage"}, None),
])
def test_cgroup_cpu_limit_reads_v2_then_v1(files, expected):
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    assert inference.cgroup_cpu_limit(read) == expected


@pytest.mark.parametrize("limit, cpus, threads", [(None, 2, 2), (1.0, 2, 1), (0.5, 2, 1), (1.5, 4, 1), (8.0, 2, 2)])
def test_threads_follow_the_cpu_quota(monkeypatch, limit, cpus, threads):
    monkeypatch.delenv("KUBESLIM_THREADS", raising=False)
    monkeypatch.setattr(inference, "cgroup_cpu_limit", lambda read: limit)
    monkeypatch.setattr(inference.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert inference.cpu_threads() == threads


def test_rows_that_are_not_one_per_sample_are_not_classified(tmp_path):
    """A detector's first output is its NMS boxes, [boxes, 6] over the batch: the first batch may
    happen to hold as many boxes as samples, the next does not; nothing is then scored as classes."""
    evalset = _evalset(tmp_path, [0, 1, 2, 2, 2])
    boxes = iter([2, 7, 0])

    def detector(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"boxes": np.ones((next(boxes), 6), np.float32)}

    s = inference.score(detector, evalset, batch_size=2)
    assert s.top1 is None and s.top5 is None and s.correct is None and s.agreement is None
    assert s.predictions.size == 0
