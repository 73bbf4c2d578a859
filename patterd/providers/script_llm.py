"""`llm.script`: a deterministic dialogue engine (intents, slot filling, tool calls) that stands in for an LLM.

Design: the LLM interface is stateless (`complete()` receives the whole history), so the engine keeps no
per-call state at all. Each call replays the *user* messages of the history through the same pure
transition function (`Dialogue.step`) and answers the last one. The assistant messages are not read back:
they are our own earlier outputs (the same config gives the same outputs), and the pipeline may have cut
them on barge-in, so they are not a reliable record. A config reload never changes a live call's graph,
so replaying under the same config is exact. The replay is memoized (`_Replays`): the state after a
history's caller messages, keyed by them and the date, so a turn costs one step, not O(turns) steps
(the full replay ran on the event loop and took 75 ms at 20 turns, 185 ms at 40: issue 14).

Caller text comes from speech recognition (a grammar's lowercase words, or open vocabulary's written form
with punctuation and digits; small errors either way), so matching works on normalized tokens with light
stemming, fuzzy token equality, and regex keywords (script_text.py). Slot values: script_slots.py.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.providers.kinds import LLMChunk, LLMUsage, Message, TextDelta, ToolCallRequest, ToolSchema
from patterd.providers.script_slots import (
    SlotType,
    extract_slot,
)
from patterd.providers.script_text import fill, fill_args, similarity
from patterd.providers.script_text import normalize as normalize  # re-exported: its old import path
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec


class SlotOptions(ProviderOptions):
    """One piece of information an intent collects before it replies."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: SlotType = "text"
    prompt: str


class ToolOptions(ProviderOptions):
    """The tool an intent calls after its reply; string arguments may hold {slot} placeholders."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class IntentOptions(ProviderOptions):
    """One thing a caller may want: how to recognize it, what to collect, what to say and do."""

    name: str
    examples: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)  # regexes searched in the normalized text
    reply: str = ""
    slots: list[SlotOptions] = Field(default_factory=list)
    tool: ToolOptions | None = None
    then: str | None = None  # intent entered right after this one completes (its reply follows)

    @field_validator("keywords")
    @classmethod
    def _compile(cls, keywords: list[str]) -> list[str]:
        for pattern in keywords:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"keyword {pattern!r} is not a valid regular expression: {exc}") from exc
        return keywords

    @model_validator(mode="after")
    def _recognizable(self) -> IntentOptions:
        if not self.examples and not self.keywords:
            raise ValueError(f"intent {self.name!r} needs examples or keywords to be recognized")
        return self


class ScriptLLMOptions(ProviderOptions):
    """Options of `llm.script`."""

    intents: list[IntentOptions] = Field(default_factory=list)
    fallback: str = "Sorry, I did not catch that. Could you say it another way?"
    greeting: str | None = None  # said when asked to speak before the caller said anything
    variables: dict[str, str] = Field(default_factory=dict)
    match_threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _references(self) -> ScriptLLMOptions:
        names = [i.name for i in self.intents]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"intent names must be unique; repeated: {', '.join(dupes)}")
        for intent in self.intents:
            if intent.then is not None and intent.then not in names:
                raise ValueError(
                    f"intent {intent.name!r} has then: {intent.then!r}, which is not an intent; known: {', '.join(names)}"
                )
        return self


# ------------------------------------------------------------------ the dialogue


@dataclass(frozen=True)
class State:
    """Where the conversation is: the intent collecting slots, and what is filled so far."""

    intent: str | None = None
    slots: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """What the engine answers to one caller message."""

    text: str
    tool: ToolCallRequest | None = None
    intent: str | None = None  # the intent recognized (None: fallback or re-prompt)


class Dialogue:
    """The pure transition function: (state, caller text) → (state, reply)."""

    def __init__(self, options: ScriptLLMOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self.options = options
        self.intents = {i.name: i for i in options.intents}
        self.clock = clock
        self._keywords = {i.name: [re.compile(k, re.IGNORECASE) for k in i.keywords] for i in options.intents}
        self._replays = _Replays()

    def score(self, intent: IntentOptions, text: str) -> float:
        """1.0 on a keyword hit, else the best example similarity."""
        if any(p.search(text) for p in self._keywords[intent.name]):
            return 1.0
        return max((similarity(text, e) for e in intent.examples), default=0.0)

    def classify(self, text: str, threshold: float) -> IntentOptions | None:
        """The best intent at or above `threshold` (ties: the one listed first)."""
        best: tuple[float, IntentOptions | None] = (0.0, None)
        for intent in self.options.intents:
            s = self.score(intent, text)
            if s > best[0]:
                best = (s, intent)
        return best[1] if best[0] >= threshold and best[1] is not None else None

    def step(self, state: State, raw: str, turn_no: int, today: datetime | None = None) -> tuple[State, Turn]:
        """Answer one caller message (`today`: the clock's now when not given)."""
        text = normalize(raw)
        today = today if today is not None else self.clock.now()
        current = self.intents.get(state.intent) if state.intent else None
        pending = _missing(current, state.slots)[0] if current and _missing(current, state.slots) else None
        # While a slot is asked for, only a confident match switches topic ("bye" mid-form still ends the call).
        threshold = max(self.options.match_threshold, 0.75) if pending else self.options.match_threshold
        matched = self.classify(text, threshold)
        if pending is not None and current is not None and (matched is None or matched.name == current.name):
            value = extract_slot(pending.type, text, pending=True, today=today)
            if value is None:
                return state, Turn(text=fill(pending.prompt, self._values(state.slots)))
            slots = {**state.slots, pending.name: value}
            # Open-vocabulary callers say more than was asked ("tuesday at 3 pm" to "which day?").
            for slot in _missing(current, slots):
                extra = extract_slot(slot.type, text, pending=False, today=today)
                if extra is not None:
                    slots[slot.name] = extra
            return self._advance(current, slots, text, turn_no, today)
        if matched is None:
            return state, Turn(text=fill(self.options.fallback, self._values(state.slots)))
        return self._advance(matched, {}, text, turn_no, today, fresh=True)

    def _advance(
        self,
        intent: IntentOptions,
        slots: dict[str, str],
        text: str,
        turn_no: int,
        today: datetime,
        *,
        fresh: bool = False,
    ) -> tuple[State, Turn]:
        """Fill what this utterance offers, ask for the next missing slot, or complete the intent."""
        if fresh:
            for slot in intent.slots:
                value = extract_slot(slot.type, text, pending=False, today=today)
                if value is not None:
                    slots[slot.name] = value
        missing = _missing(intent, slots)
        if missing:
            return State(intent.name, slots), Turn(
                fill(missing[0].prompt, self._values(slots)), None, intent.name
            )
        values = self._values(slots)
        texts = [fill(intent.reply, values)] if intent.reply else []
        tool = None
        if intent.tool is not None:
            args = fill_args(intent.tool.arguments, values)
            tool = ToolCallRequest(
                id=f"script_{turn_no}_{intent.tool.name}", name=intent.tool.name, arguments=args
            )
        state = State()
        hops, follow = 0, intent.then
        while follow is not None and hops < len(self.intents):  # the guard stops a then-cycle
            nxt = self.intents[follow]
            nxt_missing = _missing(nxt, {})
            if nxt_missing:
                texts.append(fill(nxt_missing[0].prompt, values))
                state = State(nxt.name, {})
                break
            if nxt.reply:
                texts.append(fill(nxt.reply, values))
            if tool is None and nxt.tool is not None:
                tool = ToolCallRequest(
                    id=f"script_{turn_no}_{nxt.tool.name}",
                    name=nxt.tool.name,
                    arguments=fill_args(nxt.tool.arguments, values),
                )
            follow, hops = nxt.then, hops + 1
        return state, Turn(" ".join(t for t in texts if t), tool, intent.name)

    def _values(self, slots: Mapping[str, str]) -> dict[str, str]:
        return {**self.options.variables, **slots}

    def reply(self, messages: Sequence[Message]) -> Turn | None:
        """Replay the history's caller messages and answer the last one; None when nothing is to be said."""
        users = [m.content for m in messages if m.role == "user"]
        if messages and messages[-1].role == "tool":
            return None  # a tool we asked for has run: the reply before it already said everything
        if not users:
            greeting = self.options.greeting
            return Turn(fill(greeting, self._values({}))) if greeting else None
        # Only the date of `today` reaches a step (weekday slots), so the memo is keyed by the date.
        today = self.clock.now()
        day = today.date()
        known, state = self._replays.longest(day, users[:-1])
        for n in range(known + 1, len(users)):  # earlier messages the memo does not hold (yet)
            state, _ = self.step(state, users[n - 1], n, today)
            self._replays.put(day, users[:n], state)
        state, turn = self.step(state, users[-1], len(users), today)
        self._replays.put(day, users, state)
        return turn


class _Replays:
    """LRU memo: (date, the caller messages so far) → the dialogue state after them.

    Shared by every call of one agent (the dialogue is pure, so equal histories give equal states); a
    config reload builds a new Dialogue and with it a new memo.
    """

    SIZE = 2048  # entries; a key holds references to the messages, not copies

    def __init__(self) -> None:
        self._states: OrderedDict[tuple[date, tuple[str, ...]], State] = OrderedDict()

    def longest(self, day: date, users: Sequence[str]) -> tuple[int, State]:
        """(k, state after users[:k]) for the longest memoized prefix (0, State() when none)."""
        for k in range(len(users), 0, -1):
            key = (day, tuple(users[:k]))
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
                return k, state
        return 0, State()

    def put(self, day: date, users: Sequence[str], state: State) -> None:
        self._states[(day, tuple(users))] = state
        if len(self._states) > self.SIZE:
            self._states.popitem(last=False)


def _missing(intent: IntentOptions, slots: Mapping[str, str]) -> list[SlotOptions]:
    return [s for s in intent.slots if s.name not in slots]


def _words(text: str) -> Iterator[str]:
    """Word-sized pieces that join back to `text` exactly."""
    yield from re.findall(r"\S+\s*", text)


class ScriptLLM:
    """The live `llm.script` provider (kinds.LLM)."""

    name = "script"

    def __init__(self, options: ScriptLLMOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self.dialogue = Dialogue(options, clock)

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> AsyncIterator[LLMChunk]:
        """Stream the scripted reply word by word, then its tool call, then zero usage."""
        turn = self.dialogue.reply(messages)
        if turn is not None:
            for piece in _words(turn.text):
                yield TextDelta(piece)
            if turn.tool is not None:
                yield replace(turn.tool)
        yield LLMUsage(0, 0)


@asynccontextmanager
async def build(options: ScriptLLMOptions, ctx: BuildContext) -> AsyncIterator[ScriptLLM]:
    """Nothing to open or close: the engine is pure."""
    yield ScriptLLM(options, ctx.clock)


SPEC = ProviderSpec(
    kind="llm",
    name="script",
    options=ScriptLLMOptions,
    build=build,
    summary="Scripted dialogue (intents, slot filling, tool calls) from YAML; deterministic, no model",
    capabilities=Capabilities(streaming=True, tools=True, needs_network=False),
)
