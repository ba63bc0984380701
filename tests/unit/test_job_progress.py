"""The progress line (kubeslim_api.progress) and the job's rate-limited printer (kubeslim_job.progress)."""
from __future__ import annotations

import json

import pytest

from kubeslim_api.progress import MAX_STEP_CHARS, PREFIX, ProgressLine, format_line, last_line, parse_line
from kubeslim_job import progress

pytestmark = pytest.mark.unit


# -- the line -------------------------------------------------------------------------------------

def test_a_line_round_trips_through_its_text():
    line = ProgressLine(stage="calibrate", step="hist", done=30, total=120, unit="batches", eta_seconds=12.5, time=1764860000.25)
    text = format_line(line)
    assert text.startswith(PREFIX) and "\n" not in text
    assert json.loads(text[len(PREFIX):])["etaSeconds"] == 12.5       # camelCase on the wire
    assert parse_line(text) == line


def test_a_line_is_found_behind_a_progress_bar_on_the_same_log_line():
    line = ProgressLine(stage="verify", done=3, total=4, unit="batches", time=10.0)
    assert parse_line("Sampling stage, Run batch:|#####     | 5/10" + format_line(line)) == line


@pytest.mark.parametrize("text", [
    "",
    "INFO quant_post_static: collecting",
    PREFIX + "{not json",
    PREFIX + "[1, 2]",
    PREFIX + json.dumps({"stage": "train", "time": 1.0}),                  # not a stage
    PREFIX + json.dumps({"stage": "verify", "done": -1, "time": 1.0}),     # negative count
    PREFIX + json.dumps({"stage": "verify", "total": 0, "time": 1.0}),     # an empty plan
    PREFIX + json.dumps({"stage": "verify"}),                              # no time
    PREFIX + json.dumps({"stage": "verify", "time": 1.0, "etaSeconds": -3}),
    PREFIX + '{"stage": "verify", "time": Infinity}',                   # json.loads takes it; a time cannot
    PREFIX + '{"stage": "verify", "time": 1.0, "etaSeconds": NaN}',
    PREFIX + json.dumps({"stage": "verify", "time": 1e13}),                # past year 9999
])
def test_anything_else_is_no_line(text):
    assert parse_line(text) is None


def test_unknown_keys_and_newer_versions_are_read_for_what_v1_defines():
    doc = {"v": 2, "stage": "export", "time": 5.0, "gpuUtil": 0.9}
    assert parse_line(PREFIX + json.dumps(doc)) == ProgressLine(v=2, stage="export", time=5.0)


def test_a_long_step_is_cut_not_refused():
    line = parse_line(PREFIX + json.dumps({"stage": "verify", "step": "x" * 500, "time": 1.0}))
    assert line is not None and line.step == "x" * MAX_STEP_CHARS


def test_the_last_good_line_of_a_tail_wins():
    first = format_line(ProgressLine(stage="calibrate", done=1, total=10, time=1.0))
    second = format_line(ProgressLine(stage="calibrate", done=7, total=10, time=3.0))
    tail = "\n".join([first, second, "W1204 paddle says something", PREFIX + "{broken", ""])
    assert last_line(tail).done == 7
    assert last_line("no progress here\nnor here") is None


@pytest.mark.parametrize("done, total, finished, percent", [
    (0, 10, False, 0), (5, 10, False, 50), (9, 10, False, 90),
    (10, 10, False, 99),        # the plan is done but the stage is not: never 100 before its end
    (25, 10, False, 99),        # a plan that was an estimate (a retried pass) is capped
    (3, 10, True, 100), (0, None, False, None), (0, None, True, 100),
])
def test_percent(done, total, finished, percent):
    assert ProgressLine(stage="verify", done=done, total=total, finished=finished, time=0.0).percent == percent


# -- the printer ----------------------------------------------------------------------------------

class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def reporter(stage="calibrate", interval=2.0):
    clock, lines = Clock(), []
    r = progress.Reporter(stage, write=lambda text: lines.append(parse_line(text)), clock=clock,
                          wall=lambda: 1_000_000.0 + clock.t, interval=interval)
    return r, clock, lines


def test_advancing_prints_at_most_one_line_per_interval():
    r, clock, lines = reporter()
    r.plan(1000, "batches", step="hist")
    assert len(lines) == 1 and lines[0].total == 1000 and lines[0].done == 0
    for _ in range(1000):           # 1000 batches over 10 s
        clock.t += 0.01
        r.advance("batches")
    # one line per 2 s of the 10 s, plus the plan's
    assert 5 <= len(lines) - 1 <= 6
    assert all(b.time - a.time >= 2.0 for a, b in zip(lines[1:], lines[2:]))
    assert lines[-1].done >= 990


def test_plan_and_finish_always_print():
    r, clock, lines = reporter()
    r.plan(10, "batches")
    r.plan(20, "steps", step="fallback")
    r.finish()
    assert [(x.total, x.unit, x.finished) for x in lines] == [(10, "batches", False), (20, "steps", False), (20, "steps", True)]
    assert lines[-1].percent == 100 and lines[-1].step == "fallback"


def test_a_failed_stage_keeps_how_far_it_got():
    r, clock, lines = reporter()
    r.plan(10, "batches")
    r.advance("batches", 4)
    r.finish(ok=False)
    assert lines[-1].finished is False and lines[-1].percent == 40


def test_units_of_another_kind_are_not_counted():
    # While the fallback (steps) measures its candidates, the evaluation loop still counts batches.
    r, clock, lines = reporter()
    r.plan(12, "steps", step="fallback")
    r.advance("batches", 50)
    r.advance("steps")
    clock.t += 5
    r.step("fallback")
    assert lines[-1].done == 1 and lines[-1].unit == "steps"


def test_eta_comes_from_the_measured_rate():
    r, clock, lines = reporter()
    r.plan(100, "batches")
    assert lines[0].eta_seconds is None                # nothing measured yet
    clock.t += 10
    r.advance("batches", 25)                           # 25 in 10 s: 75 more take 30 s
    assert lines[-1].eta_seconds == pytest.approx(30.0)
    assert lines[-1].time == pytest.approx(1_000_000.0 + clock.t)


def test_the_heartbeat_repeats_the_state_only_when_the_printer_was_quiet():
    r, clock, lines = reporter()
    r.plan(10, "batches")
    clock.t += 3
    r.beat(5.0)
    assert len(lines) == 1                             # printed 3 s ago
    clock.t += 2
    r.beat(5.0)
    assert len(lines) == 2 and lines[1].time > lines[0].time
    r.finish()
    clock.t += 10
    r.beat(5.0)
    assert len(lines) == 3                             # nothing after the last line


def test_module_functions_do_nothing_without_a_running_stage(capsys):
    progress.finish()
    progress.plan(10, "batches")
    progress.advance("batches")
    progress.step("x")
    progress.finish()
    assert capsys.readouterr().err == ""


def test_a_stage_prints_its_first_and_last_line_to_stderr(capsys):
    progress.start("export", heartbeat=None)
    progress.plan(2, "steps")
    progress.finish()
    out = capsys.readouterr()
    assert out.out == ""                               # stdout is the stage result's
    lines = [parse_line(x) for x in out.err.splitlines()]
    assert [(x.stage, x.percent) for x in lines] == [("export", None), ("export", 0), ("export", 100)]


@pytest.mark.parametrize("algos, batches, expected", [
    (("avg",), 8, 8), (("hist",), 8, 16), (("KL", "avg", "mse"), 10, 40), ((), 10, 0),
])
def test_calibration_batches_count_the_second_pass_of_kl_and_hist(algos, batches, expected):
    assert progress.calibration_batches(algos, batches) == expected


@pytest.mark.parametrize("samples, batch, models, expected", [(540, 64, 2, 18), (64, 64, 3, 3), (1, 64, 1, 1)])
def test_evaluation_batches(samples, batch, models, expected):
    assert progress.evaluation_batches(samples, batch, models) == expected
