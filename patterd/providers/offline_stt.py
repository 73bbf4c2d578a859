"""`stt.offline`: pocketsphinx speech recognition with its bundled US English model; no network.

Followed: the pocketsphinx 5 Python API (`Decoder(**config)`, `start_utt` / `process_raw` / `end_utt` /
`hyp()`, `Vad(mode, sample_rate, frame_length)`), and the ARPA n-gram format for `phrases`.

Audio path: 8 kHz μ-law → PCM16 → (default) resampled to 16 kHz for the bundled 16 kHz acoustic model.
`sample_rate_mode: native_8k` instead decodes at 8 kHz with a 256-point FFT and the filterbank's upper
edge pulled below Nyquist (a copy of the model whose feat.params says `-upperf 3500`); on phone-band
speech it measured worse (bench/offline_stt.py), so it is not the default.

Endpointing: pocketsphinx's own webrtc-based `Vad` classifies 30 ms frames; speech opens an
utterance (with 300 ms of pre-roll), `endpointing_ms` of non-speech closes it and emits a final
transcript with `end_of_utterance`. Interim hypotheses come every `interim_interval_ms` of speech.

`phrases`: the agent's expected sentences become a small bigram language model and a dictionary
limited to their words. Recognition is then restricted to that vocabulary but far more accurate.

Decoding is CPU-bound and runs in one worker thread per stream; the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pocketsphinx
from pydantic import Field

from patterd.errors import ProviderError
from patterd.protocols.audio import Resampler, ulaw_to_pcm16
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec

_PREROLL_MS = 300


class OfflineSTTOptions(ProviderOptions):
    """Options of `stt.offline`."""

    model: str | None = None  # acoustic model directory; default: pocketsphinx's bundled en-us
    dictionary: str | None = None  # pronunciation dictionary; default: the bundled cmudict
    language_model: str | None = None  # ARPA or binary LM file; default: the bundled en-us LM
    sample_rate_mode: Literal["upsample_16k", "native_8k"] = "upsample_16k"
    phrases: list[str] = Field(default_factory=list)  # expected sentences: a small LM is built from them
    endpointing_ms: int = Field(default=500, ge=90, le=10000)  # silence that ends an utterance
    interim_interval_ms: int = Field(default=300, ge=60, le=5000)
    vad_aggressiveness: int = Field(default=2, ge=0, le=3)


# ------------------------------------------------------------------ model preparation


def _bundled(*parts: str) -> Path:
    return Path(pocketsphinx.get_model_path(), *parts)


def _words(phrase: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", phrase.lower()).split()


def phrases_arpa(phrases: Sequence[str]) -> str:
    """A bigram ARPA model of `phrases` (absolute discounting, backoff to add-one unigrams)."""
    sentences = [["<s>", *_words(p), "</s>"] for p in phrases if _words(p)]
    unigrams: collections.Counter[str] = collections.Counter()
    bigrams: collections.Counter[tuple[str, str]] = collections.Counter()
    for s in sentences:
        unigrams.update(s)
        bigrams.update(itertools.pairwise(s))
    discount = 0.5
    words = sorted(unigrams)
    total = sum(c for w, c in unigrams.items() if w != "<s>")
    followers = collections.Counter(a for a, _ in bigrams)
    lines = ["\\data\\", f"ngram 1={len(words)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for w in words:
        logp = -99.0 if w == "<s>" else math.log10((unigrams[w] + 1) / (total + len(words)))
        backoff = math.log10(discount * followers[w] / unigrams[w]) if followers[w] else 0.0
        lines.append(f"{logp:.4f} {w} {backoff:.4f}")
    lines += ["", "\\2-grams:"]
    for (a, b), c in sorted(bigrams.items()):
        lines.append(f"{math.log10((c - discount) / unigrams[a]):.4f} {a} {b}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class PreparedModel:
    """Decoder settings for every stream of one provider, plus words of `phrases` the dictionary lacks."""

    config: dict[str, Any]
    sample_rate: int
    unknown_words: tuple[str, ...] = ()


def prepare(options: OfflineSTTOptions, workdir: Path) -> PreparedModel:
    """Write generated model files into `workdir` and return the decoder settings (blocking)."""
    hmm = Path(options.model) if options.model else _bundled("en-us", "en-us")
    dictionary = Path(options.dictionary) if options.dictionary else _bundled("en-us", "cmudict-en-us.dict")
    lm = Path(options.language_model) if options.language_model else _bundled("en-us", "en-us.lm.bin")
    for what, path in (("model", hmm), ("dictionary", dictionary), ("language_model", lm)):
        if not path.exists():
            raise ProviderError(f"stt.offline {what} {str(path)!r} does not exist", provider="stt.offline")
    config: dict[str, Any] = {"loglevel": "FATAL"}
    unknown: list[str] = []
    if options.phrases:
        wanted = {w for p in options.phrases for w in _words(p)}
        kept, known = [], set()
        with dictionary.open(encoding="utf-8") as f:
            for line in f:
                word = line.split(" ", 1)[0].split("(", 1)[0]
                if word in wanted:
                    kept.append(line)
                    known.add(word)
        unknown = sorted(wanted - known)
        usable = [" ".join(w for w in _words(p) if w in known) for p in options.phrases]
        (workdir / "phrases.dict").write_text("".join(kept), encoding="utf-8")
        (workdir / "phrases.arpa").write_text(phrases_arpa(usable), encoding="utf-8")
        dictionary, lm = workdir / "phrases.dict", workdir / "phrases.arpa"
    rate = 16000
    if options.sample_rate_mode == "native_8k":
        # feat.params inside the model directory overrides -upperf, so use a copy with it rewritten.
        narrow = workdir / "hmm8k"
        narrow.mkdir()
        for item in hmm.iterdir():
            if item.name != "feat.params":
                (narrow / item.name).symlink_to(item)
        params = (hmm / "feat.params").read_text() if (hmm / "feat.params").exists() else ""
        params = re.sub(r"-upperf\s+\S+", "-upperf 3500", params)
        (narrow / "feat.params").write_text(params)
        hmm, rate = narrow, 8000
        config.update(samprate=8000, nfft=256, upperf=3500)
    config.update(hmm=str(hmm), dict=str(dictionary), lm=str(lm))
    return PreparedModel(config, rate, tuple(unknown))


# ------------------------------------------------------------------ one call's recognition


class _SharedCMN:
    """The cepstral mean learned from the last recognized utterance, to start the next call's decoder.

    A fresh decoder starts from the model's generic mean and is inaccurate until it has adapted over
    a few seconds; calls on one deployment share a channel (phone band, codec), so the last call's
    mean is a much better start. Written and read whole (a str) from worker threads.
    """

    value: str | None = None


@dataclass(frozen=True)
class _Flush:
    done: threading.Event


class OfflineSTTStream:
    """One call's recognition (kinds.STTStream); decoding happens in a worker thread."""

    def __init__(
        self,
        model: PreparedModel,
        options: OfflineSTTOptions,
        loop: asyncio.AbstractEventLoop,
        cmn: _SharedCMN,
    ) -> None:
        self._model = model
        self._cmn = cmn
        self._options = options
        self._loop = loop
        self._inbox: queue.SimpleQueue[bytes | _Flush | None] = queue.SimpleQueue()
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name="stt.offline", daemon=True)
        self._ready = threading.Event()

    # -------- event-loop side

    def start(self) -> None:
        self._thread.start()

    async def close(self) -> None:
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law), never blocks."""
        if ulaw:
            self._inbox.put(ulaw)

    async def flush(self) -> None:
        """Finalize the open utterance (if any); when this returns its final transcript is queued."""
        done = threading.Event()
        self._inbox.put(_Flush(done))
        await asyncio.to_thread(self._wait, done)

    def _wait(self, done: threading.Event) -> None:
        while not done.wait(0.05):
            if not self._thread.is_alive():  # the worker died; its error is already in the transcript queue
                return

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise ProviderError(
                    f"stt.offline recognition failed: {item}", provider="stt.offline"
                ) from item
            yield item

    def _emit(self, item: Transcript | BaseException | None) -> None:
        self._loop.call_soon_threadsafe(self._out.put_nowait, item)

    # -------- worker side

    def _run(self) -> None:
        try:
            self._decode()
        except BaseException as exc:  # handed to the reader, which raises it in the event loop
            self._emit(exc)
        finally:
            self._emit(None)

    def _decode(self) -> None:
        decoder = pocketsphinx.Decoder(**self._model.config)
        if self._cmn.value is not None:
            decoder.set_cmn(self._cmn.value)
        vad = pocketsphinx.Vad(self._options.vad_aggressiveness, 8000, 0.03)
        frame_bytes: int = vad.frame_bytes
        frame_ms = round(1000 * frame_bytes / 2 / 8000)
        upsample = self._model.sample_rate == 16000
        resampler = Resampler(8000, 16000, quality="HQ") if upsample else None
        preroll: collections.deque[bytes] = collections.deque(maxlen=max(1, _PREROLL_MS // frame_ms))
        pending = b""
        in_utt, silence_ms, since_interim, last_interim = False, 0, 0, ""

        def feed(pcm: bytes) -> None:
            data = resampler.process(pcm) if resampler else pcm
            if data:  # the resampler holds back its first few ms (filter delay)
                decoder.process_raw(data, False, False)

        def finish(final: bool) -> None:
            nonlocal in_utt, last_interim
            decoder.end_utt()
            hyp = decoder.hyp()
            text = hyp.hypstr.strip() if hyp is not None else ""
            in_utt, last_interim = False, ""
            if text:
                self._cmn.value = decoder.get_cmn()
            if text or final:  # an utterance that was only noise ends silently unless asked for
                self._emit(Transcript(text, is_final=True, end_of_utterance=True))

        while True:
            item = self._inbox.get()
            if item is None:
                if in_utt:
                    decoder.end_utt()
                return
            if isinstance(item, _Flush):
                if in_utt:
                    if pending:
                        feed(pending)
                        pending = b""
                    finish(final=True)
                item.done.set()
                continue
            pending += ulaw_to_pcm16(item)
            while len(pending) >= frame_bytes:
                frame, pending = pending[:frame_bytes], pending[frame_bytes:]
                speech = bool(vad.is_speech(frame))
                if not in_utt:
                    preroll.append(frame)
                    if speech:
                        decoder.start_utt()
                        in_utt, silence_ms, since_interim = True, 0, 0
                        feed(b"".join(preroll))
                        preroll.clear()
                    continue
                feed(frame)
                silence_ms = 0 if speech else silence_ms + frame_ms
                since_interim += frame_ms
                if silence_ms >= self._options.endpointing_ms:
                    finish(final=False)
                    continue
                if since_interim >= self._options.interim_interval_ms:
                    since_interim = 0
                    hyp = decoder.hyp()
                    text = hyp.hypstr.strip() if hyp is not None else ""
                    if text and text != last_interim:
                        last_interim = text
                        self._emit(Transcript(text, is_final=False))


class OfflineSTT:
    """The live `stt.offline` provider (kinds.STT)."""

    def __init__(self, model: PreparedModel, options: OfflineSTTOptions) -> None:
        self.model = model
        self.options = options
        self._cmn = _SharedCMN()

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[OfflineSTTStream]:
        """Open a recognition stream for one call (its decoder loads in the worker thread)."""
        stream = OfflineSTTStream(self.model, self.options, asyncio.get_running_loop(), self._cmn)
        stream.start()
        try:
            yield stream
        finally:
            await stream.close()


@asynccontextmanager
async def build(options: OfflineSTTOptions, ctx: BuildContext) -> AsyncIterator[OfflineSTT]:
    """Prepare the model files once (phrases LM, 8 kHz model copy) and check that a decoder loads."""
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="patterd-stt-"))
    try:
        model = await asyncio.to_thread(prepare, options, workdir)
        try:
            await asyncio.to_thread(lambda: pocketsphinx.Decoder(**model.config))
        except RuntimeError as exc:
            raise ProviderError(
                f"stt.offline cannot load pocketsphinx with {model.config}: {exc}", provider="stt.offline"
            ) from exc
        yield OfflineSTT(model, options)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


SPEC = ProviderSpec(
    kind="stt",
    name="offline",
    options=OfflineSTTOptions,
    build=build,
    summary="pocketsphinx speech recognition (bundled US English model), optional phrase list; no network",
    capabilities=Capabilities(
        streaming=True, interim_results=True, needs_network=False, sample_rates=(8000,)
    ),
)
