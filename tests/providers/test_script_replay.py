"""llm.script's memoized replay: one dialogue step per turn (the full replay stalled the event loop), same answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from patterd.providers.kinds import Message, TextDelta
from patterd.providers.script_llm import Dialogue, ScriptLLM, State, Turn
from tests.providers.test_script_llm import converse, draft_options

WEDNESDAY = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
THURSDAY = datetime(2025, 3, 6, 12, 0, tzinfo=UTC)


class MovableClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return 0.0


class CountingDialogue(Dialogue):
    """Counts the transition steps taken (the work each turn costs on the event loop)."""

    steps = 0

    def step(self, state: State, raw: str, turn_no: int, today: datetime | None = None) -> tuple[State, Turn]:
        self.steps += 1
        return super().step(state, raw, turn_no, today)


def counting_llm(clock: Any = None) -> tuple[ScriptLLM, CountingDialogue]:
    llm = ScriptLLM(draft_options(), clock or MovableClock(WEDNESDAY))
    dialogue = CountingDialogue(llm.dialogue.options, llm.dialogue.clock)
    llm.dialogue = dialogue
    return llm, dialogue


async def answer(llm: ScriptLLM, history: list[Message]) -> str:
    return "".join([c.text async for c in llm.complete(history, []) if isinstance(c, TextDelta)])


async def test_each_turn_takes_one_step_not_a_replay_of_the_call() -> None:
    llm, dialogue = counting_llm()
    lines = ["what are your opening hours", "where are you located"] * 15
    turns = await converse(llm, lines)
    assert dialogue.steps == len(lines)  # a full replay per turn would take 30 * 31 / 2 = 465
    assert all("Monday to Friday" in text for text, _ in turns[0::2])
    assert all("Main Street" in text for text, _ in turns[1::2])


async def test_memoized_answers_equal_a_fresh_replay_and_calls_do_not_mix() -> None:
    llm, _ = counting_llm()
    booking = ["book an appointment", "jane", "tomorrow", "at noon"]
    other = ["book an appointment", "john smith", "friday", "at three thirty"]
    history_a = [Message("system", "x")]
    history_b = [Message("system", "x")]
    for line_a, line_b in zip(booking, other, strict=True):  # two calls interleaved on one memo
        history_a.append(Message("user", line_a))
        history_b.append(Message("user", line_b))
        text_a, text_b = await answer(llm, history_a), await answer(llm, history_b)
        fresh, _ = counting_llm()  # a new memo: the whole history replayed
        assert text_a == await answer(fresh, history_a)
        assert text_b == await answer(fresh, history_b)
        history_a.append(Message("assistant", text_a))
        history_b.append(Message("assistant", text_b))
    assert "booked for Jane on Thursday at 12 PM" in text_a
    assert "booked for John Smith on Friday at 3:30." in text_b


async def test_the_memo_is_per_date() -> None:
    # "tomorrow" said on a Wednesday is Thursday; the same history answered on a Thursday replays it.
    clock = MovableClock(WEDNESDAY)
    llm, dialogue = counting_llm(clock)
    history = [Message("system", "x")]
    for line in ["book an appointment", "jane", "tomorrow"]:
        history.append(Message("user", line))
        text = await answer(llm, history)
        history.append(Message("assistant", text))
    assert text == "And at what time on Thursday?"
    history.append(Message("user", "at noon"))
    clock.at = THURSDAY
    steps = dialogue.steps
    assert "on Friday at 12 PM" in await answer(llm, history)
    assert dialogue.steps - steps == 4  # nothing memoized for Thursday: the whole call again
