"""Behavioural contract suites a provider plugin runs against its own fake vendor server (STT, TTS, LLM, engine).

Usage (see docs/providers.md, "Writing a provider")::

    from patterd.testing import LLMSuite, Setup

    @asynccontextmanager
    async def setup() -> AsyncIterator[Setup[LLM, LLMControl]]:
        async with MyFakeServer() as fake:
            yield Setup(provider="myvendor", key_variable="MYVENDOR_API_KEY",
                        build=lambda: build(Options(api_key="k", base_url=fake.url), BuildContext()),
                        control=MyControl(fake), check=check)

    @pytest.mark.parametrize("case", LLMSuite.cases())
    async def test_behaviour(case: str) -> None:
        await LLMSuite(setup).run(case)
"""

from patterd.testing.call import Ear, RecordingCall
from patterd.testing.engine import EngineSuite
from patterd.testing.harness import (
    CaseSkipped,
    FakeControl,
    Setup,
    SetupFactory,
    Suite,
    wait_until,
)
from patterd.testing.kinds import EngineControl, LLMControl, STTControl, TTSControl
from patterd.testing.llm import LLMSuite
from patterd.testing.proxy import CountingProxy
from patterd.testing.stt import STTSuite
from patterd.testing.tts import TTSSuite

__all__ = [
    "CaseSkipped",
    "CountingProxy",
    "Ear",
    "EngineControl",
    "EngineSuite",
    "FakeControl",
    "LLMControl",
    "LLMSuite",
    "RecordingCall",
    "STTControl",
    "STTSuite",
    "Setup",
    "SetupFactory",
    "Suite",
    "TTSControl",
    "TTSSuite",
    "wait_until",
]
