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
import itertools
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pocketsphinx

from patterd.errors import ProviderError
from patterd.protocols.audio import Resampler
from patterd.providers.kinds import Transcript
from patterd.providers.offline_frames import SpeechFrames
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
_NBEST = 20  # grammar mode: alternatives searched for a whole phrase


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


class OfflineSTTStream(WorkerStream):
    """One call's recognition (kinds.STTStream); decoding happens in a worker thread."""

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

    def _confidence(self, text: str, posterior: float) -> float | None:
        """The hypothesis' posterior probability; in grammar mode, out-of-grammar word strings get at most 0.2."""
        if not text:
            return None
        confidence = max(0.0, min(1.0, posterior))
        if self._model.mode == "grammar" and text not in self._model.sentences:
            confidence = min(confidence, 0.2)
        return round(confidence, 3)

    def _work(self) -> None:
        decoder = pocketsphinx.Decoder(**self._model.config)
        if self._cmn.value is not None:
            decoder.set_cmn(self._cmn.value)
        frames = SpeechFrames(self._options.vad_aggressiveness)
        frame_ms = frames.frame_ms
        upsample = self._model.sample_rate == 16000
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
            if text and self._model.mode == "grammar" and text not in self._model.sentences:
                # No path reached the grammar's end, so pocketsphinx returned the best partial one
                # ("i" of "i would like ..." for a clipped "bye"); prefer the best whole phrase.
                for n in itertools.islice(decoder.nbest(), _NBEST):
                    if n is not None and n.hypstr.strip() in self._model.sentences:
                        text, posterior = n.hypstr.strip(), posterior / 2
                        break
            if not text and last_interim:
                # The search lost every path late in the utterance (a word the grammar lacks): the
                # caller still said what the last interim result heard.
                text, posterior = last_interim, 0.0
            in_utt, last_interim = False, ""
            if text:
                self._cmn.value = decoder.get_cmn()
            if text or final:  # an utterance that was only noise ends silently unless asked for
                confidence = self._confidence(text, posterior)
                # Where in the stream the utterance was closed: the pipeline times the end of the turn by it.
                audio_ms = frames.position_ms
                self._emit(
                    Transcript(
                        text, is_final=True, end_of_utterance=True, confidence=confidence, audio_ms=audio_ms
                    )
                )

        while True:
            item = self._inbox.get()
            if item is None:
                if in_utt:
                    decoder.end_utt()
                return
            if isinstance(item, Flush):
                if in_utt:
                    if pending := frames.take_pending():
                        feed(pending)
                    finish(final=True)
                item.done.set()
                continue
            for frame, speech in frames.push(item):
                if not in_utt:
                    opening = frames.onset(frame, speech)
                    if opening is not None:
                        begin(opening)
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


class PocketsphinxSTT:
    """The live `stt.offline` provider on pocketsphinx (kinds.STT)."""

    engine_name = "pocketsphinx"

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
