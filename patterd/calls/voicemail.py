"""Answering-machine verdicts: when (and whether) to leave the call's voicemail message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

AMD_MACHINE = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
MACHINE_START_GRACE_SECS = 3.0  # after AMD's machine_start, wait this long for the end of the greeting


class Voicemail:
    """Turns AMD verdicts into at most one `leave(message)`, after the greeting when the carrier says so."""

    def __init__(
        self,
        message: str | None,
        leave: Callable[[str], None],
        *,
        grace_secs: float = MACHINE_START_GRACE_SECS,
    ) -> None:
        self.message = message
        self._leave = leave
        self._grace_secs = grace_secs
        self._grace: asyncio.TimerHandle | None = None
        self.left = False
        self._closed = False

    def verdict(self, answered_by: str) -> bool:
        """An AMD result (the AnsweredBy vocabulary); True when the call is now a voicemail call."""
        if answered_by not in AMD_MACHINE or not self.message:
            return False
        if self.left or self._closed:
            return True
        if answered_by == "machine_start":
            # The greeting is still playing; carriers that report its end (a greeting-end or
            # message-end detection) send another result soon: speak after the beep, not over it.
            if self._grace is None:
                self._grace = asyncio.get_running_loop().call_later(self._grace_secs, self._start)
            return True
        self._start()
        return True

    def _start(self) -> None:
        """Leave the message, once per call."""
        self._cancel_grace()
        if self.left or self._closed or not self.message:
            return
        self.left = True
        self._leave(self.message)

    def close(self) -> None:
        """The call ended: nothing more is left."""
        self._closed = True
        self._cancel_grace()

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
