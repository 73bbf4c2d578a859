"""llm.script slot values from what recognizers write: a grammar's words and open vocabulary's written form."""

from __future__ import annotations

from datetime import datetime

import pytest

from patterd.providers.script_llm import normalize
from patterd.providers.script_slots import extract_date, extract_name, extract_time

WEDNESDAY = datetime(2025, 3, 5, 12, 0)


@pytest.mark.parametrize(
    ("said", "bare", "name"),
    [
        ("Maria Garcia.", True, "Maria Garcia"),
        ("My name is Maria Garcia.", False, "Maria Garcia"),
        ("It's Maria Garcia and I'd like to come in on Tuesday.", False, "Maria Garcia"),
        ("I'd like to book an appointment for Maria Garcia on Tuesday at 3 p.m.", False, "Maria Garcia"),
        ("Please book it under the name Robert Brown.", False, "Robert Brown"),
        ("Uh, yes, Anna.", True, "Anna"),
        ("I'd like to book an appointment for Tuesday.", False, None),
    ],
)
def test_names(said: str, bare: bool, name: str | None) -> None:
    assert extract_name(normalize(said), bare=bare) == name


@pytest.mark.parametrize(
    ("said", "date"),
    [
        ("Tuesday at 3 pm", "Tuesday"),
        ("on tuesday at three p m", "Tuesday"),
        ("the twenty-third", "March 23"),
        ("The 23rd, please.", "March 23"),
        ("on the twenty third", "March 23"),
        ("the first", "April 1"),  # the 1st of this month is past: the next one
        ("March the fourth.", "March 4"),
        ("the 12th of January", "January 12"),
        ("at 3 pm", None),
    ],
)
def test_dates(said: str, date: str | None) -> None:
    assert extract_date(normalize(said), WEDNESDAY) == date


@pytest.mark.parametrize(
    ("said", "pending", "time"),
    [
        ("Tuesday at 3 pm", False, "3 PM"),
        ("Tuesday at 3 p.m.", False, "3 PM"),
        ("3:30 p.m.", False, "3:30 PM"),
        ("three thirty p m", False, "3:30 PM"),
        ("at three thirty in the afternoon", False, "3:30 PM"),
        ("three thirty", True, "3:30"),
        ("three thirty", False, None),  # a bare time only when it was asked for
        ("At 4.", True, "4 o'clock"),
        ("Half past four.", True, "4:30"),
        ("15:30", False, "3:30 PM"),
        ("noon", False, "12 PM"),
    ],
)
def test_times(said: str, pending: bool, time: str | None) -> None:
    assert extract_time(normalize(said), pending=pending) == time
