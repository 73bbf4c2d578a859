"""The carrier contract suite on carrier.vonage against its fake (one daemon for every case; see tests/carriers/world.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from patterd.testing.carrier_suite import CarrierSuite
from tests.carriers.world import World, named_world

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with named_world("vonage", tmp_path_factory.mktemp("vonage")) as world:
        yield world


@pytest.mark.parametrize("case", CarrierSuite.cases())
async def test_contract(world: World, case: str) -> None:
    await CarrierSuite(world.setup).run(case)
