"""Tests of llm.script: intent matching on recognizer-style text, slot filling across turns, tools, the shipped draft."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from patterd.providers.kinds import LLMUsage, Message, TextDelta, ToolCallRequest
from patterd.providers.script_llm import SPEC, ScriptLLM, ScriptLLMOptions
from patterd.providers.script_slots import extract_date, extract_name, extract_phone, extract_time
from patterd.providers.spec import BuildContext

DRAFT = Path(__file__).parents[2] / "config" / "patter.yaml"
WEDNESDAY = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return WEDNESDAY

    def monotonic(self) -> float:
        return 0.0


def draft_options() -> ScriptLLMOptions:
    agent = yaml.safe_load(DRAFT.read_text())["agents"][0]
    llm = dict(agent["llm"])
    assert llm.pop("type") == "script"
    return ScriptLLMOptions.model_validate(llm)


async def converse(llm: ScriptLLM, lines: list[str]) -> list[tuple[str, list[ToolCallRequest]]]:
    """Play caller lines through complete() the way the pipeline does, keeping the history."""
    history = [Message("system", "You are a front desk.")]
    turns = []
    for line in lines:
        history.append(Message("user", line))
        text, tools, usage = "", [], []
        async for chunk in llm.complete(history, []):
            if isinstance(chunk, TextDelta):
                text += chunk.text
            elif isinstance(chunk, ToolCallRequest):
                tools.append(chunk)
            else:
                usage.append(chunk)
        assert usage == [LLMUsage(0, 0)]
        history.append(Message("assistant", text, tool_calls=tuple(tools)))
        for call in tools:
            history.append(Message("tool", "ok", tool_call_id=call.id))
        turns.append((text, tools))
    return turns


async def test_simulate_example_from_the_issue() -> None:
    turns = await converse(ScriptLLM(draft_options()), ["hi", "what time do you open", "bye"])
    assert turns[0][0].startswith("Hello")
    assert "Monday to Friday, 9 am to 5 pm" in turns[1][0]
    assert "Goodbye" in turns[2][0]
    assert [t.name for t in turns[2][1]] == ["end_call"]
    assert turns[2][1][0].arguments == {"reason": "caller said goodbye"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("what are your opening hours", "Monday to Friday"),
        ("What are your opening hours?", "Monday to Friday"),
        ("is the office open on saturday", "Monday to Friday"),
        ("where are you located", "1 Main Street, Springfield"),
        ("whats your adress", "1 Main Street"),  # recognizer misspelling
        ("what is the weather like", "Sorry"),
    ],
)
async def test_intents_on_recognizer_text(line: str, expected: str) -> None:
    [(text, _)] = await converse(ScriptLLM(draft_options()), [line])
    assert expected in text


async def test_booking_collects_name_then_day_then_time() -> None:
    llm = ScriptLLM(draft_options(), FixedClock())
    turns = await converse(
        llm, ["i'd like to book an appointment", "um it's john smith", "uh tomorrow", "at three thirty"]
    )
    assert turns[0][0] == "Sure. What is your name?"
    assert turns[1][0] == "Thanks, John Smith. Which day would you like to come in?"
    assert turns[2][0] == "And at what time on Thursday?"
    assert turns[3][0].startswith("You are booked for John Smith on Thursday at 3:30.")


async def test_booking_from_open_vocabulary_recognizer_text() -> None:
    # What whisper writes: capitals, punctuation, digits, and more than was asked for.
    llm = ScriptLLM(draft_options(), FixedClock())
    turns = await converse(llm, ["I'd like to book an appointment.", "Maria Garcia.", "Tuesday at 3 p.m."])
    assert turns[1][0] == "Thanks, Maria Garcia. Which day would you like to come in?"
    assert turns[2][0].startswith("You are booked for Maria Garcia on Tuesday at 3 PM.")
    [(text, _)] = await converse(
        ScriptLLM(draft_options(), FixedClock()),
        ["I would like to book an appointment for Maria Garcia on the 23rd at 3:30 p.m."],
    )
    assert text.startswith("You are booked for Maria Garcia on March 23 at 3:30 PM."), text


async def test_booking_reasks_until_the_slot_is_understood_and_bye_still_ends() -> None:
    turns = await converse(
        ScriptLLM(draft_options()), ["book an appointment for friday", "mary", "noon", "goodbye"]
    )
    assert turns[0][0] == "Sure. What is your name?"  # the day was already given
    assert turns[1][0] == "And at what time on Friday?"
    assert "booked for Mary on Friday at 12 PM" in turns[2][0]
    turns = await converse(ScriptLLM(draft_options()), ["book an appointment", "jane", "hmm not sure", "bye"])
    assert turns[2][0] == "Thanks, Jane. Which day would you like to come in?"
    assert [t.name for t in turns[3][1]] == ["end_call"]


async def test_greeting_before_the_caller_speaks_and_silence_after_a_tool() -> None:
    llm = ScriptLLM(ScriptLLMOptions.model_validate({**_opts(), "greeting": "Welcome to {company}."}))
    chunks = [c async for c in llm.complete([Message("system", "x")], [])]
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Welcome to Acme."
    after_tool = [
        Message("user", "bye"),
        Message("assistant", "Bye.", tool_calls=(ToolCallRequest("a", "end_call", {}),)),
        Message("tool", "ok", tool_call_id="a"),
    ]
    assert [c async for c in llm.complete(after_tool, [])] == [LLMUsage(0, 0)]


def _opts(**extra: Any) -> dict[str, Any]:
    return {
        "variables": {"company": "Acme"},
        "intents": [
            {
                "name": "callback",
                "keywords": [r"\bcall (me )?back\b"],
                "slots": [{"name": "phone", "type": "phone", "prompt": "What number?"}],
                "reply": "We will call {phone}.",
                "tool": {
                    "name": "schedule_callback",
                    "arguments": {"number": "{phone}", "tags": ["{company}"]},
                },
                "then": "more",
            },
            {"name": "more", "examples": ["anything else"], "reply": "Anything else?"},
        ],
        **extra,
    }


async def test_tool_arguments_filled_and_then_chains() -> None:
    llm = ScriptLLM(ScriptLLMOptions.model_validate(_opts()))
    turns = await converse(llm, ["please call me back", "five five five one two three four five six seven"])
    assert turns[0][0] == "What number?"
    text, tools = turns[1]
    assert text == "We will call +15551234567. Anything else?"
    assert tools[0].name == "schedule_callback"
    assert tools[0].arguments == {"number": "+15551234567", "tags": ["Acme"]}


def test_text_streams_word_by_word() -> None:
    from patterd.providers.script_llm import _words

    assert list(_words("We are at 1 Main St.")) == ["We ", "are ", "at ", "1 ", "Main ", "St."]


def test_slot_extractors() -> None:
    assert extract_name("my name is john smith", bare=False) == "John Smith"
    assert extract_name("this is mary", bare=False) == "Mary"
    assert extract_name("i want a haircut", bare=False) is None
    assert extract_name("peter", bare=True) == "Peter"
    assert extract_date("next tuesday please", WEDNESDAY) == "Tuesday"
    assert extract_date("today", WEDNESDAY) == "Wednesday"
    assert extract_date("march third", WEDNESDAY) == "March 3"
    assert extract_date("the 3rd of march", WEDNESDAY) == "March 3"
    assert extract_date("2025-03-10", WEDNESDAY) == "Monday, March 10, 2025"
    assert extract_date("whenever", WEDNESDAY) is None
    assert extract_time("at 3 pm") == "3 PM"
    assert extract_time("three thirty pm") == "3:30 PM"
    assert extract_time("15:30") == "3:30 PM"
    assert extract_time("noon") == "12 PM"
    assert extract_time("nine in the morning") == "9 AM"
    assert extract_phone("my number is 555 123 4567") == "+15551234567"
    assert (
        extract_phone("plus four four seven seven zero zero nine zero zero one two three") == "+447700900123"
    )
    assert extract_phone("two") is None


def test_options_are_strict_and_checked() -> None:
    with pytest.raises(ValidationError, match="not an intent"):
        ScriptLLMOptions.model_validate({"intents": [{"name": "a", "examples": ["x"], "then": "b"}]})
    with pytest.raises(ValidationError, match="needs examples or keywords"):
        ScriptLLMOptions.model_validate({"intents": [{"name": "a"}]})
    with pytest.raises(ValidationError, match="regular expression"):
        ScriptLLMOptions.model_validate({"intents": [{"name": "a", "keywords": ["("]}]})
    with pytest.raises(ValidationError, match="extra"):
        ScriptLLMOptions.model_validate({"intentz": []})


async def test_spec_builds_a_provider() -> None:
    assert SPEC.key == "llm.script"
    assert not SPEC.capabilities.needs_network
    async with SPEC.build(draft_options(), BuildContext()) as llm:
        assert isinstance(llm, ScriptLLM)
        assert llm.name == "script"
