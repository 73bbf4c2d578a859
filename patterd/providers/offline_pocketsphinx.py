"""The pocketsphinx engine of `stt.offline`: model preparation (phrases LM, grammar, live CMN) and one call's streaming recognition.

Followed: the pocketsphinx 5 Python API (`Decoder(**config)`, `start_utt` / `process_raw` / `end_utt` /
`hyp()` / `nbest()`, `Vad(mode, sample_rate, frame_length)`).

Live CMN: `Decoder(cmn="live")` is not enough. pocketsphinx 5.1.1 reads the model directory's
`feat.params` after the arguments, and the bundled en-us model says `-cmn batch` there, so
`decoder.config["cmn"]` reads `batch` after init (batch CMN needs the whole utterance; streaming
hypotheses are made with a stale mean). `prepare` therefore decodes with a copy of the model directory
(symlinks) whose feat.params says `-cmn live`; the effect is measured in docs/offline.md.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pocketsphinx

from patterd.errors import ProviderError
from patterd.providers import pocketsphinx_child
from patterd.providers.offline_phrases import (
    MAX_SENTENCES,
    expand_phrase,
    group_words,
    parse_phrase,
    phrases_arpa,
    phrases_jsgf,
)
from patterd.providers.offline_worker import Flush, WorkerStream

if TYPE_CHECKING:
    from patterd.providers.offline_stt import OfflineSTTOptions

# The cepstral mean of phone-band speech (8 kHz μ-law upsampled to 16 kHz), averaged over five espeak-ng
# voices. The model's own start value (40,3,-1,0,...) is wideband's: with it, live CMN needs seconds to
# adapt and a call's first short words ("hi") come out as other words (bench/offline_stt.py).
PHONE_BAND_CMN = "49.3,24.6,-34.8,44.6,-25.3,-0.9,9.9,-33.4,10.8,-13.6,1.6,8.2,-16.0"


def _bundled(*parts: str) -> Path:
    return Path(pocketsphinx.get_model_path(), *parts)


@dataclass(frozen=True)
class PreparedModel:
    """Decoder settings for every stream of one provider, plus words of `phrases` the dictionary lacks."""

    config: dict[str, Any]
    sample_rate: int
    unknown_words: tuple[str, ...] = ()
    mode: Literal["open", "phrases", "grammar"] = "open"
    sentences: frozenset[str] = frozenset()  # grammar mode: the whole phrases (for confidence)


def _phrase_dictionary(source: Path, wanted: set[str]) -> tuple[str, set[str]]:
    """The lines of `source` for `wanted` words, and the words found."""
    kept: list[str] = []
    known: set[str] = set()
    with source.open(encoding="utf-8") as f:
        for line in f:
            word = line.split(" ", 1)[0].split("(", 1)[0]
            if word in wanted:
                kept.append(line)
                known.add(word)
    return "".join(kept), known


def _model_copy(hmm: Path, target: Path, *, live_cmn: bool, narrow: bool) -> Path:
    """A copy of the model directory (symlinks) whose feat.params says `-cmn live` and/or `-upperf 3500`.

    feat.params inside the model directory overrides the decoder's arguments, so they must be written there.
    """
    target.mkdir()
    for item in hmm.iterdir():
        if item.name != "feat.params":
            (target / item.name).symlink_to(item)
    params = (hmm / "feat.params").read_text() if (hmm / "feat.params").exists() else ""
    if live_cmn:
        params = re.sub(r"-cmn\s+\S+", "-cmn live", params) if "-cmn" in params else params + "-cmn live\n"
    if narrow:
        params = re.sub(r"-upperf\s+\S+", "-upperf 3500", params)
    (target / "feat.params").write_text(params)
    return target


def prepare(options: OfflineSTTOptions, workdir: Path) -> PreparedModel:
    """Write generated model files into `workdir` and return the decoder settings (blocking)."""
    hmm = Path(options.model) if options.model else _bundled("en-us", "en-us")
    dictionary = Path(options.dictionary) if options.dictionary else _bundled("en-us", "cmudict-en-us.dict")
    lm = Path(options.language_model) if options.language_model else _bundled("en-us", "en-us.lm.bin")
    mode = options.effective_mode
    checks = [("model", hmm), ("dictionary", dictionary)]
    if mode == "open":
        checks.append(("language_model", lm))
    for what, path in checks:
        if not path.exists():
            raise ProviderError(f"stt.offline {what} {str(path)!r} does not exist", provider="stt.offline")
    config: dict[str, Any] = {"loglevel": "FATAL", "cmn": "live" if options.live_cmn else "batch"}
    unknown: list[str] = []
    sentences: frozenset[str] = frozenset()
    grammar: Path | None = None
    if mode != "open":
        parsed = [parse_phrase(p) for p in options.phrases]
        wanted = set().union(*(group_words(g) for g in parsed))
        text, known = _phrase_dictionary(dictionary, wanted)
        if not known:
            raise ProviderError(
                f"stt.offline phrases {options.phrases!r}: none of their words is in {str(dictionary)!r}",
                provider="stt.offline",
            )
        unknown = sorted(wanted - known)
        dictionary = workdir / "phrases.dict"
        dictionary.write_text(text, encoding="utf-8")
        expanded = [" ".join(w for w in words if w in known) for g in parsed for words in expand_phrase(g)]
        if mode == "phrases":
            lm = workdir / "phrases.arpa"
            lm.write_text(phrases_arpa(expanded[:MAX_SENTENCES]), encoding="utf-8")
        else:
            grammar = workdir / "phrases.gram"
            grammar.write_text(
                phrases_jsgf(options.phrases, known, options.out_of_grammar_weight), encoding="utf-8"
            )
            sentences = frozenset(s for s in expanded if s)
    rate = 16000
    if options.sample_rate_mode == "native_8k":
        rate = 8000
        config.update(samprate=8000, nfft=256, upperf=3500)
    if options.live_cmn or rate == 8000:
        hmm = _model_copy(hmm, workdir / "hmm", live_cmn=options.live_cmn, narrow=rate == 8000)
    cmn_init = options.cmn_init or (PHONE_BAND_CMN if rate == 16000 else None)
    if cmn_init:
        config["cmninit"] = cmn_init.replace(" ", "")
    config.update(hmm=str(hmm), dict=str(dictionary))
    if grammar is not None:
        # The lattice's best path often ends mid-phrase where the search itself reached the end.
        config.update(jsgf=str(grammar), bestpath=False)
    else:
        config["lm"] = str(lm)
    config.update(options.decoder)
    return PreparedModel(config, rate, tuple(unknown), mode, sentences)


# ------------------------------------------------------------------ one call's recognition


class _SharedCMN:
    """The cepstral mean learned from the last recognized utterance, to start the next call's decoder.

    A fresh decoder starts from the model's generic mean and is inaccurate until it has adapted over
    a few seconds; calls on one deployment share a channel (phone band, codec), so the last call's
    mean is a much better start. Written and read whole (a str) from worker threads.
    """

    value: str | None = None


# Decoders run in children of a fork server: a small process started once (behind readiness, see
# PocketsphinxSTT.warm_up) with pocketsphinx imported, so a call's child is a fork of it (~10 ms) rather
# than of the threaded daemon, which must never fork.
_PROCESSES = multiprocessing.get_context("forkserver")
_PROCESSES.set_forkserver_preload(["patterd.providers.pocketsphinx_child"])
CHILD_EXIT_SECS = 5.0  # a closed stream's child has this long to end before it is killed


class OfflineSTTStream(WorkerStream):
    """One call's recognition (kinds.STTStream); decoding happens in a child process (`pocketsphinx_child`).

    pocketsphinx holds the GIL while it decodes (and ~30 ms while a decoder loads), which stalled the
    event loop, and so every call's audio and the API, as offline calls were added. The worker thread now
    only forwards audio down the pipe (its writes release the GIL) and a second thread reads results back.
    """

    def __init__(
        self,
        model: PreparedModel,
        options: OfflineSTTOptions,
        loop: asyncio.AbstractEventLoop,
        cmn: _SharedCMN,
    ) -> None:
        super().__init__(loop, "stt.offline")
        self._model = model
        self._cmn = cmn
        self._options = options
        self._flushing: deque[Flush] = deque()  # sent to the child, its transcript not yet back
        self.decoder_pid: int | None = None  # the child's, once it started

    def _work(self) -> None:
        conn, child_end = _PROCESSES.Pipe()
        child = _PROCESSES.Process(
            target=pocketsphinx_child.main,
            args=(child_end, self._model, self._options, self._cmn.value),
            name="patterd-stt",
            daemon=True,
        )
        child.start()
        child_end.close()  # the child's copy is its own: EOF reaches us when the child ends
        self.decoder_pid = child.pid
        failure: list[BaseException] = []
        reader = threading.Thread(target=self._read, args=(conn, child, failure), name="stt.offline-results")
        reader.start()
        try:
            self._forward(conn)
        finally:
            reader.join()
            child.join(CHILD_EXIT_SECS)
            if child.is_alive():
                child.kill()
                child.join()
            conn.close()
        if failure:
            raise failure[0]

    def _forward(self, conn: Connection) -> None:
        """Worker thread: caller audio, flushes and the close, from the inbox down the pipe."""
        try:
            while True:
                item = self._inbox.get()
                if item is None:
                    conn.send_bytes(pocketsphinx_child.CLOSE)
                    return
                if isinstance(item, Flush):
                    self._flushing.append(item)
                    conn.send_bytes(pocketsphinx_child.FLUSH)
                else:
                    conn.send_bytes(pocketsphinx_child.AUDIO + item)
        except OSError:  # the child is gone; the reader says why
            return

    def _read(self, conn: Connection, child: BaseProcess, failure: list[BaseException]) -> None:
        """Second thread: the child's results, in order, until it ends (then the forwarder stops too)."""
        try:
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    child.join(CHILD_EXIT_SECS)
                    failure.append(
                        RuntimeError(f"the pocketsphinx process ended (exit code {child.exitcode})")
                    )
                    return
                kind = message[0]
                if kind == "t":
                    self._emit(message[1])
                elif kind == "f":
                    self._flushing.popleft().done.set()  # after its transcript: the loop sees that first
                elif kind == "m":
                    self._cmn.value = message[1]
                elif kind == "e":
                    failure.append(RuntimeError(message[1]))
                    return
                else:  # "x": closed as asked
                    return
        finally:
            self._inbox.put(None)  # a forwarder still waiting for audio stops (a second None is never read)


class PocketsphinxSTT:
    """The live `stt.offline` provider on pocketsphinx (kinds.STT)."""

    engine_name = "pocketsphinx"

    def __init__(self, model: PreparedModel, options: OfflineSTTOptions) -> None:
        self.model = model
        self.options = options
        self._cmn = _SharedCMN()

    async def warm_up(self) -> None:
        """Start the decoders' fork server (after ready: the daemon serves meanwhile; a call waits for it)."""
        await asyncio.to_thread(multiprocessing.forkserver.ensure_running)

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[OfflineSTTStream]:
        """Open a recognition stream for one call (its decoder loads in its own process)."""
        stream = OfflineSTTStream(self.model, self.options, asyncio.get_running_loop(), self._cmn)
        stream.start()
        try:
            yield stream
        finally:
            await stream.close()


@asynccontextmanager
async def build_pocketsphinx(options: OfflineSTTOptions) -> AsyncIterator[PocketsphinxSTT]:
    """Prepare the model files once (phrases LM, live-CMN / 8 kHz model copy) and check that a decoder loads."""
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="patterd-stt-"))
    try:
        model = await asyncio.to_thread(prepare, options, workdir)
        try:
            await asyncio.to_thread(lambda: pocketsphinx.Decoder(**model.config))
        except RuntimeError as exc:
            raise ProviderError(
                f"stt.offline cannot load pocketsphinx with {model.config}: {exc}", provider="stt.offline"
            ) from exc
        yield PocketsphinxSTT(model, options)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
