"""The vendor providers through the shipped behavioural suites (patterd.testing) against their fakes."""

from __future__ import annotations

import importlib.util

import pytest

from patterd.testing import LLMSuite, STTSuite
from tests.testing.vendors import anthropic_setup, deepgram_setup


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in the tree yet")


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_stt_deepgram(case: str) -> None:
    needs("patterd.providers.deepgram")
    await STTSuite(deepgram_setup).run(case)


@pytest.mark.parametrize("case", LLMSuite.cases())
async def test_llm_anthropic(case: str) -> None:
    needs("patterd.providers.anthropic")
    await LLMSuite(anthropic_setup).run(case)
