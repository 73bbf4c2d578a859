"""Behavioural contract suites a provider plugin runs against its own fake vendor server (STT, TTS, LLM, engine,
carrier: see `patterd.testing.carrier_suite` for the carrier's, which runs against a live daemon).

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
from patterd.testing.carrier import (
    AgentControl,
    CarrierCall,
    CarrierDriver,
    CarrierSetup,
    Speak,
    TransferringDriver,
    UseTool,
)
from patterd.testing.carrier_suite import CarrierSuite
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
    "AgentControl",
    "CarrierCall",
    "CarrierDriver",
    "CarrierSetup",
    "CarrierSuite",
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
    "Speak",
    "Suite",
    "TTSControl",
    "TTSSuite",
    "TransferringDriver",
    "UseTool",
    "wait_until",
]
