"""`tts.offline`: espeak-ng speech, sentence by sentence, as 8 kHz μ-law.

Two ways to reach espeak-ng, picked by `engine`:
- `library`: libespeak-ng through ctypes, from the `espeakng-loader` PyPI wheel (it bundles the shared
  library and espeak-ng-data, so `pip install` is enough). API per espeak-ng's speak_lib.h:
  espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS) → espeak_SetSynthCallback → espeak_SetVoiceByName /
  espeak_SetParameter(espeakRATE, espeakPITCH) → espeak_Synth(espeakCHARS_UTF8); the callback receives
  22050 Hz 16-bit PCM chunks and returns 1 to abort. The library is a process-wide singleton that is
  not reentrant, so syntheses run one at a time in the library's own thread (`_Library.executor`),
  never in the event loop's default executor: ten calls speaking at once parked a thread each there
  on the library's lock and filled the pool that listings and file writes share (issue 14).
- `binary`: the `espeak-ng` program (Debian package espeak-ng) via `espeak-ng --stdout`, which writes a
  WAV stream (44-byte header, then PCM) as it synthesizes; one process per sentence.
`auto` prefers the library and falls back to the binary. Audio is resampled 22050 → 8000 with the
streaming resampler in protocols/audio.py and encoded to μ-law.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import re
import shutil
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from pydantic import Field

from patterd.errors import ProviderError
from patterd.protocols.audio import Resampler, pcm16_to_ulaw
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec

ESPEAK_RATE = 22050
_WAV_HEADER = 44
_INSTALL_HINT = "install espeak-ng: `pip install espeakng-loader` or `apt-get install espeak-ng`"


class OfflineTTSOptions(ProviderOptions):
    """Options of `tts.offline`."""

    engine: Literal["auto", "library", "binary"] = "auto"
    voice: str = Field(default="en-us", pattern=r"^[A-Za-z0-9_+-]+$")  # espeak-ng voice name (+variant)
    rate_wpm: int = Field(default=175, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)
    binary: str = "espeak-ng"  # program name or path, for engine: binary


def split_sentences(text: str) -> list[str]:
    """Sentences (ending at . ! ? ; : followed by a space), so the first is spoken before the rest is made."""
    parts = re.split(r"(?<=[.!?;:])\s+", text.strip())
    return [p for p in parts if p.strip()]


# ------------------------------------------------------------------ libespeak-ng via ctypes

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE_PARAM = 1
_ESPEAK_PITCH_PARAM = 3
_ESPEAK_CHARS_UTF8 = 1
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Library:
    """The process-wide libespeak-ng; `synthesize` runs one text at a time under a lock."""

    _instance: _Library | None = None
    _guard = threading.Lock()

    THREAD_NAME = "espeak-ng"

    def __init__(self, lib: ctypes.CDLL, data_path: str) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        # One thread, as the library speaks one text at a time anyway; jobs run in the order asked.
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self.THREAD_NAME)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100, data_path.encode(), 0)
        if rate != ESPEAK_RATE:
            raise ProviderError(
                f"libespeak-ng initialization returned {rate}; expected sample rate {ESPEAK_RATE} (data at {data_path})",
                provider="tts.offline",
            )
        self._sink: Any = None  # the current synthesis' chunk handler, called from the callback
        self._callback = _SynthCallback(self._on_audio)  # kept referenced: C holds only a raw pointer
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def load(cls) -> _Library | None:
        """The shared library from espeakng-loader, or None when that wheel is not installed."""
        with cls._guard:
            if cls._instance is None:
                try:
                    import espeakng_loader  # type: ignore[import-untyped, import-not-found, unused-ignore]
                except ImportError:
                    return None
                lib = ctypes.CDLL(espeakng_loader.get_library_path())
                cls._instance = cls(lib, espeakng_loader.get_data_path())
            return cls._instance

    def _on_audio(self, wav: Any, samples: int, events: Any) -> int:
        sink = self._sink
        if sink is None:
            return 1
        if wav and samples > 0:
            return 1 if sink(ctypes.string_at(wav, samples * 2)) else 0
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, sink: Any) -> None:
        """Blocking: speak `text`, handing 22050 Hz PCM chunks to `sink` (which returns True to abort)."""
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ProviderError(f"espeak-ng has no voice {voice!r}", provider="tts.offline")
            self._lib.espeak_SetParameter(_ESPEAK_RATE_PARAM, rate, 0)
            self._lib.espeak_SetParameter(_ESPEAK_PITCH_PARAM, pitch, 0)
            data = text.encode()
            self._sink = sink
            try:
                self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
            finally:
                self._sink = None


# ------------------------------------------------------------------ the provider


class OfflineTTS:
    """The live `tts.offline` provider (kinds.TTS)."""

    def __init__(self, options: OfflineTTSOptions, library: _Library | None, binary: str | None) -> None:
        self.options = options
        self._library = library
        self._binary = binary

    @property
    def engine(self) -> str:
        """Which espeak-ng is in use: "library" or "binary"."""
        return "library" if self._library is not None else "binary"

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """Speak `text`: 8 kHz μ-law chunks, the first sentence's audio before later sentences are made."""
        resampler = Resampler(ESPEAK_RATE, 8000)
        for sentence in split_sentences(text):
            async for pcm in self._sentence(sentence):
                out = resampler.process(pcm)
                if out:
                    yield pcm16_to_ulaw(out)
        tail = resampler.process(b"", last=True)
        if tail:
            yield pcm16_to_ulaw(tail)

    def _sentence(self, sentence: str) -> AsyncIterator[bytes]:
        if self._library is not None:
            return self._from_library(self._library, sentence)
        assert self._binary is not None
        return self._from_binary(self._binary, sentence)

    async def _from_library(self, library: _Library, sentence: str) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def sink(pcm: bytes) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, pcm)
            return stop.is_set()

        def work() -> None:
            if stop.is_set():  # cut off (barge-in) while it waited for the library's thread
                loop.call_soon_threadsafe(queue.put_nowait, None)
                return
            try:
                library.synthesize(
                    sentence, self.options.voice, self.options.rate_wpm, self.options.pitch, sink
                )
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the consumer, which re-raises it in the loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = loop.run_in_executor(library.executor, work)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # a consumer that stopped listening (barge-in) aborts the synthesis
            await asyncio.shield(worker)

    async def _from_binary(self, binary: str, sentence: str) -> AsyncIterator[bytes]:
        o = self.options
        args = ["--stdout", "-v", o.voice, "-s", str(o.rate_wpm), "-p", str(o.pitch), "--", sentence]
        try:
            proc = await asyncio.create_subprocess_exec(
                binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ProviderError(
                f"cannot run {binary!r}: {exc}; {_INSTALL_HINT}", provider="tts.offline"
            ) from exc
        assert proc.stdout is not None and proc.stderr is not None
        try:
            header = await proc.stdout.readexactly(_WAV_HEADER)
            if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                raise ProviderError(f"{binary} --stdout did not write a WAV stream", provider="tts.offline")
            carry = b""
            while chunk := await proc.stdout.read(4096):
                chunk = carry + chunk
                whole = len(chunk) - len(chunk) % 2  # keep 16-bit samples whole across reads
                carry = chunk[whole:]
                if whole:
                    yield chunk[:whole]
            code = await proc.wait()
            if code != 0:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise ProviderError(f"{binary} exited with {code}: {err}", provider="tts.offline")
        except asyncio.IncompleteReadError as exc:
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            raise ProviderError(
                f"{binary} wrote no audio for voice {o.voice!r}: {err or 'no error text'}",
                provider="tts.offline",
            ) from exc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def _find_backend(options: OfflineTTSOptions) -> tuple[_Library | None, str | None]:
    if options.engine in ("auto", "library"):
        library = _Library.load()
        if library is not None:
            return library, None
        if options.engine == "library":
            raise ProviderError(
                "tts.offline engine 'library' needs the espeakng-loader package: pip install espeakng-loader",
                provider="tts.offline",
            )
    binary = shutil.which(options.binary)
    if binary is None:
        raise ProviderError(
            f"espeak-ng program {options.binary!r} not found on PATH; {_INSTALL_HINT}", provider="tts.offline"
        )
    return None, binary


@asynccontextmanager
async def build(options: OfflineTTSOptions, ctx: BuildContext) -> AsyncIterator[OfflineTTS]:
    """Find espeak-ng (library or program) once; synthesis happens per request."""
    library, binary = await asyncio.to_thread(_find_backend, options)
    yield OfflineTTS(options, library, binary)


async def check(provider: OfflineTTS) -> None:
    """Speak one word to prove espeak-ng works with the configured voice."""
    async with contextlib.aclosing(provider.synthesize("ok")) as audio:
        async for _ in audio:
            break


SPEC = ProviderSpec(
    kind="tts",
    name="offline",
    options=OfflineTTSOptions,
    build=build,
    summary="espeak-ng speech synthesis (bundled library or the espeak-ng program), no network",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=False, sample_rates=(8000,)),
)
