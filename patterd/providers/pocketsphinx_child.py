"""One call's pocketsphinx recognition, run in a child process: the decoder holds the GIL while it decodes.

The parent (`offline_pocketsphinx.OfflineSTTStream`) and the child speak over one `multiprocessing` pipe.
Parent → child, `send_bytes`: `a` + μ-law audio, `f` (finalize the open utterance), `c` (close).
Child → parent, pickled tuples in order: `("t", Transcript)`, `("f",)` once a flush's transcript went out,
`("m", cmn)` the cepstral mean learned from a recognized utterance, then `("x",)` after a close or
`("e", "what failed")`. A child whose parent is gone reads EOF and ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import pocketsphinx

from patterd.protocols.audio import Resampler
from patterd.providers.kinds import Transcript
from patterd.providers.offline_frames import SpeechFrames

if TYPE_CHECKING:
    from patterd.providers.offline_pocketsphinx import PreparedModel
    from patterd.providers.offline_stt import OfflineSTTOptions

AUDIO, FLUSH, CLOSE = b"a", b"f", b"c"  # the first byte of each parent → child message
_NBEST = 20  # grammar mode: alternatives searched for a whole phrase
# Decoders run at the lowest CPU priority: with ten calls ten of them are runnable at once, and at the
# daemon's priority its event loop (every call's audio, the API) waited its turn among them (list p99 164-181
# ms while a history loaded; nice 5: 81-85 ms, nice 10: 43-56 ms, nice 19: 31-34 ms). They still get every
# cycle the daemon leaves (the STT stage of a turn: 24-27 ms, as in the daemon's own threads before).
NICE = 19


def main(conn: Connection, model: PreparedModel, options: OfflineSTTOptions, cmn: str | None) -> None:
    """The child's entry point: recognize what the pipe brings until a close (or the parent's end)."""
    # A terminal's Ctrl-C, or a stop sent to the whole process group, is the daemon's to handle: it drains
    # its calls, then closes this pipe (or dies, and the pipe reads EOF), which is what ends a decoder.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        recognize(model, options, cmn, conn.recv_bytes, conn.send)
    except EOFError:  # the parent is gone: nobody to tell
        return
    except BaseException as exc:  # the parent raises it in the call's STT stream
        _send_quietly(conn, ("e", f"{type(exc).__name__}: {exc}"))
    else:
        _send_quietly(conn, ("x",))
    finally:
        conn.close()


def _send_quietly(conn: Connection, message: tuple[object, ...]) -> None:
    with contextlib.suppress(OSError):  # the parent went first
        conn.send(message)


def confidence(model: PreparedModel, text: str, posterior: float) -> float | None:
    """The hypothesis' posterior probability; in grammar mode, out-of-grammar word strings get at most 0.2."""
    if not text:
        return None
    value = max(0.0, min(1.0, posterior))
    if model.mode == "grammar" and text not in model.sentences:
        value = min(value, 0.2)
    return round(value, 3)


def recognize(
    model: PreparedModel,
    options: OfflineSTTOptions,
    cmn: str | None,
    receive: Callable[[], bytes],
    send: Callable[[tuple[object, ...]], None],
) -> None:
    """Decode messages from `receive` until a close, sending results with `send` (the protocol above)."""
    decoder = pocketsphinx.Decoder(**model.config)
    if cmn is not None:
        decoder.set_cmn(cmn)
    frames = SpeechFrames(options.vad_aggressiveness)
    frame_ms = frames.frame_ms
    upsample = model.sample_rate == 16000
    resampler: Resampler | None = None
    in_utt, silence_ms, since_interim, last_interim = False, 0, 0, ""

    def feed(pcm: bytes, *, last: bool = False) -> None:
        data = resampler.process(pcm, last=last) if resampler else pcm
        if data:  # the resampler holds back its first few ms (filter delay)
            decoder.process_raw(data, False, False)

    def begin(opening: bytes) -> None:
        nonlocal resampler, in_utt, silence_ms, since_interim
        # One resampler per utterance, flushed at its end, so no audio is held over to the next.
        resampler = Resampler(8000, 16000, quality="HQ") if upsample else None
        decoder.start_utt()
        in_utt, silence_ms, since_interim = True, 0, 0
        feed(opening)

    def finish(final: bool) -> None:
        nonlocal in_utt, last_interim
        if resampler is not None:
            feed(b"", last=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        posterior = hyp.prob if hyp is not None else 0.0
        if text and model.mode == "grammar" and text not in model.sentences:
            # No path reached the grammar's end, so pocketsphinx returned the best partial one
            # ("i" of "i would like ..." for a clipped "bye"); prefer the best whole phrase.
            for n in itertools.islice(decoder.nbest(), _NBEST):
                if n is not None and n.hypstr.strip() in model.sentences:
                    text, posterior = n.hypstr.strip(), posterior / 2
                    break
        if not text and last_interim:
            # The search lost every path late in the utterance (a word the grammar lacks): the
            # caller still said what the last interim result heard.
            text, posterior = last_interim, 0.0
        in_utt, last_interim = False, ""
        if text:
            send(("m", decoder.get_cmn()))
        if text or final:  # an utterance that was only noise ends silently unless asked for
            # Where in the stream the utterance was closed: the pipeline times the end of the turn by it.
            send(
                (
                    "t",
                    Transcript(
                        text,
                        is_final=True,
                        end_of_utterance=True,
                        confidence=confidence(model, text, posterior),
                        audio_ms=frames.position_ms,
                    ),
                )
            )

    while True:
        message = receive()
        kind, audio = message[:1], message[1:]
        if kind == CLOSE:
            if in_utt:
                decoder.end_utt()
            return
        if kind == FLUSH:
            if in_utt:
                if pending := frames.take_pending():
                    feed(pending)
                finish(final=True)
            send(("f",))
            continue
        for frame, speech in frames.push(audio):
            if not in_utt:
                opening = frames.onset(frame, speech)
                if opening is not None:
                    begin(opening)
                continue
            feed(frame)
            silence_ms = 0 if speech else silence_ms + frame_ms
            since_interim += frame_ms
            if silence_ms >= options.endpointing_ms:
                finish(final=False)
                continue
            if since_interim >= options.interim_interval_ms:
                since_interim = 0
                hyp = decoder.hyp()
                text = hyp.hypstr.strip() if hyp is not None else ""
                if text and text != last_interim:
                    last_interim = text
                    send(("t", Transcript(text, is_final=False)))
