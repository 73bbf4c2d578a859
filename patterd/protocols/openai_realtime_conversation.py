"""Sans-I/O state of one OpenAI Realtime conversation: one response at a time, the items as they play, the replay.

The server allows one active response per conversation: a response.create sent while one is active
is refused (conversation_already_has_active_response). This state machine decides when requests and
verbatim messages go out, which responses were cancelled (their late audio must not be played), what
each assistant item sent and said, and the text history a new connection is given. It returns the
client messages to send and never touches a socket or a clock.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from patterd.protocols import openai_realtime as rt

PENDING = "(requested)"  # a response.create is on its way; its id comes with response.created
HISTORY_REPLAY_ITEMS = 40  # transcript lines replayed into a new connection after a reconnect


@dataclass
class Item:
    """What we know about one assistant item while it plays."""

    sent_ms: float = 0.0
    transcript: list[str] = field(default_factory=list)
    interrupted: bool = False
    reported: bool = False
    engine_ms: float | None = None  # the caller's last voiced frame → this item's first audio from the engine


@dataclass(frozen=True)
class Line:
    """An assistant transcript line to record: what was said of an item, and whether it was cut off."""

    item_id: str
    text: str
    interrupted: bool
    engine_ms: float | None


class Conversation:
    """Response bookkeeping of one call's Realtime conversation (survives reconnects)."""

    def __init__(self) -> None:
        self.active: str | None = None  # the response in progress: its id, PENDING, or None
        self._cancelled: set[str] = set()
        self._want_response = False  # a response is wanted once the active one is done
        self._say_next: str | None = None  # verbatim text to speak once the active response has ended
        self._cancel_created = False  # a response.cancel went out before the response's id was known
        self._greeted = False
        self.items: dict[str, Item] = {}
        self._tool_names: dict[str, str] = {}  # call_id → function name
        # The conversation so far as text: a new connection starts empty, so it is replayed there.
        self.history: collections.deque[tuple[str, str]] = collections.deque(maxlen=HISTORY_REPLAY_ITEMS)

    # -------------------------------------------------------------- a (re)connection

    def reconnected(self, response_wanted: bool) -> None:
        """A new connection: nothing is active or cancelled there; `response_wanted` if a request was queued."""
        self.active = None
        self._cancel_created = False
        self._cancelled.clear()
        self._want_response = response_wanted

    def greeting(self, first_message: str | None) -> str | None:
        """The first connection's greeting (a verbatim response.create), unless a message replaces it."""
        if self._greeted:
            return None
        self._greeted = True
        if first_message and self._say_next is None:
            self.active = PENDING
            return rt.response_create(rt.say_verbatim_instructions(first_message))
        return None

    def resume(self) -> list[str]:
        """What a connection sends once set up: a message still to say, or a response still wanted."""
        if self.active is not None:
            return []
        if self._say_next is not None:
            text, self._say_next = self._say_next, None
            self.active = PENDING
            return [rt.response_create(rt.say_verbatim_instructions(text))]
        if self._want_response:
            self._want_response = False
            self.active = PENDING
            return [rt.response_create()]
        return []

    # -------------------------------------------------------------- our requests

    def request_response(self) -> list[str]:
        """Ask for a response now, or right after the one in progress."""
        if self.active is None:
            self.active = PENDING
            return [rt.response_create()]
        self._want_response = True
        return []

    def say(self, text: str, *, connected: bool) -> list[str]:
        """Speak `text` word for word now: cancel the response in progress, then say it.

        The verbatim response.create goes out at once only when nothing is active; otherwise it waits
        for the cancelled response's response.done (a create sent earlier would be refused as
        conversation_already_has_active_response).
        """
        if not connected:  # (re)connecting: said right after the session.update, instead of a greeting
            self._say_next = text
            return []
        if self.active is None:
            self.active = PENDING
            return [rt.response_create(rt.say_verbatim_instructions(text))]
        if self.active == PENDING:
            self._cancel_created = True
        else:
            self._cancelled.add(self.active)
        self._say_next = text
        self._want_response = False  # the verbatim message replaces whatever was asked for
        return [rt.response_cancel()]

    def barge_in(self, heard: tuple[str, int] | None) -> tuple[list[str], int]:
        """The caller talked over the agent; `heard` is (item id, ms played). Returns (messages, played ms)."""
        out: list[str] = []
        if self.active is not None:
            self._cancelled.add(self.active)
            out.append(rt.response_cancel())
        if heard is None:
            return out, 0
        segment, played_ms = heard
        item = self.items.get(segment)
        if item is not None:
            item.interrupted = True
            # The server rejects audio_end_ms beyond what it sent for the item.
            out.append(rt.truncate(segment, 0, min(played_ms, int(item.sent_ms))))
        return out, played_ms

    # -------------------------------------------------------------- server events

    def created(self, response_id: str) -> None:
        """response.created: the id of the response we asked for."""
        self.active = response_id
        if self._cancel_created:
            self._cancel_created = False
            self._cancelled.add(response_id)

    def cancelled(self, response_id: str) -> bool:
        """True for a response we cancelled: its late audio must not reach the caller."""
        return response_id in self._cancelled

    def item(self, item_id: str) -> Item:
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = Item()
        return item

    def transcript_delta(self, item_id: str, delta: str) -> str | None:
        """More words of an item; returns the text so far for live views (None: not to be shown)."""
        item = self.item(item_id)
        item.transcript.append(delta)
        if item.reported or item.interrupted:
            return None
        return "".join(item.transcript)

    def transcript_done(self, item_id: str, transcript: str) -> Line | None:
        """An item's final transcript: the line to record (None when already recorded or empty)."""
        item = self.item(item_id)
        if item.reported:
            return None
        item.reported = True
        text = transcript.strip()
        if not text:
            return None
        self.history.append(("assistant", text))
        engine_ms = None if item.engine_ms is None else round(item.engine_ms, 1)
        return Line(item_id, text, item.interrupted, engine_ms)

    def user_said(self, text: str) -> None:
        """The caller's transcribed words, for the replay."""
        self.history.append(("user", text))

    def done(self, status: str) -> tuple[list[Line], list[str]]:
        """response.done: (lines of items cut off without a final transcript, messages to send next)."""
        self.active = None
        lines: list[Line] = []
        for item_id, item in list(self.items.items()):
            if not item.reported and item.transcript and (item.interrupted or status != "completed"):
                item.interrupted = True
                line = self.transcript_done(item_id, "".join(item.transcript))
                if line is not None:
                    lines.append(line)
        return lines, self.resume()

    def tool_added(self, call_id: str, name: str) -> None:
        """A function_call item was added: remember its name for when its arguments are done."""
        self._tool_names[call_id] = name

    def tool_name(self, call_id: str, name: str | None) -> str:
        return name or self._tool_names.get(call_id, "")
