"""The built-in providers through the shipped behavioural suites (patterd.testing) against their fakes."""

from __future__ import annotations

import pytest

from patterd.testing import EngineSuite, LLMSuite, STTSuite, TTSSuite
from tests.testing.adapters import (
    offline_stt_setup,
    offline_tts_setup,
    openai_llm_setup,
    openai_realtime_setup,
)


@pytest.mark.parametrize("case", LLMSuite.cases())
async def test_llm_openai(case: str) -> None:
    await LLMSuite(openai_llm_setup).run(case)


@pytest.mark.parametrize("case", EngineSuite.cases())
async def test_engine_openai_realtime(case: str) -> None:
    await EngineSuite(openai_realtime_setup).run(case)


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_stt_offline(case: str) -> None:
    await STTSuite(offline_stt_setup).run(case)


@pytest.mark.parametrize("case", TTSSuite.cases())
async def test_tts_offline(case: str) -> None:
    await TTSSuite(offline_tts_setup).run(case)
