"""The shared helpers that bound foreign text (kubeslim_api.text.truncate) and read/write
metav1.Time (kubeslim_operator.times): the limits hold exactly, and a time survives a round trip."""
from __future__ import annotations

import time

import pytest

from kubeslim_api.text import ELLIPSIS, truncate
from kubeslim_operator.times import format_time, parse_time

pytestmark = pytest.mark.unit


def test_text_that_fits_is_returned_unchanged():
    assert truncate("abcde", 5) == "abcde"
    assert truncate("", 1) == ""


def test_longer_text_is_cut_to_exactly_the_limit_ending_in_an_ellipsis():
    cut = truncate("abcdef", 5)
    assert cut == "abcd" + ELLIPSIS
    assert len(cut) == 5
    assert truncate("ab", 1) == ELLIPSIS


def test_a_limit_below_one_is_refused_naming_the_limit():
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        truncate("abc", 0)


def test_format_time_writes_metav1_time_in_utc():
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(1767225600.9) == "2026-01-01T00:00:00Z"     # cut to the second, not rounded


def test_parse_time_reads_what_format_time_writes():
    assert parse_time("2026-01-01T00:00:00Z") == 1767225600.0
    assert parse_time(format_time(1767225600)) == 1767225600.0


def test_format_time_without_seconds_is_now():
    before = int(time.time())
    now = parse_time(format_time())
    assert now is not None and before <= now <= time.time()


@pytest.mark.parametrize("value", [None, "", "2026-01-01", "2026-01-01T00:00:00.5Z", "yesterday"])
def test_parse_time_of_an_absent_or_malformed_value_is_none(value):
    assert parse_time(value) is None
