"""One running daemon per carrier for the contract suite and the e2e script: the driver, the fake engine, a tool."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from patterd.testing.carrier import ALL_FEATURES, CarrierDriver, CarrierSetup
from tests.daemon_process import DaemonProcess, run_daemon
from tests.e2e.scenarios import Carrier, ToolServer, daemon_config, engine_server
from tests.fakes.carrier_drivers import (
    EngineAgent,
    PlivoDriver,
    SignalWireDriver,
    TelnyxDriver,
    TwilioDriver,
    VonageDriver,
)
from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.fakes.sample_carrier import SampleDriver
from tests.fakes.softphone_driver import SoftphoneDriver
from tests.plugins.sample_site import install_sample

TRANSFER_TO = "+15550009999"


class Driven(CarrierDriver, Protocol):
    """A driver with the lifecycle the world runs it through (the e2e scenario adapters' shape)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def config(self) -> str: ...
    async def attach(self, daemon_url: str) -> None: ...
    async def detach(self) -> None: ...


@dataclass
class World:
    """A carrier's running daemon and everything it talks to."""

    setup: CarrierSetup
    driver: Driven
    engine: FakeRealtimeServer
    tool: ToolServer
    daemon: DaemonProcess
    records: Path


@asynccontextmanager
async def carrier_world(
    driver: Driven,
    tmp: Path,
    *,
    features: frozenset[str] = ALL_FEATURES,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[World]:
    """Start the driver's fakes, the fake engine, a webhook tool and patterd with the carrier configured."""
    await driver.start()
    tool = ToolServer()
    await tool.start()
    try:
        async with engine_server() as engine:
            records = tmp / "records"
            config = tmp / "patter.yaml"
            # daemon_config reads only config(); tools: is the last list of what it writes
            text = daemon_config(cast(Carrier, driver), engine.url, tool.url, records)
            config.write_text(text + f'      - {{type: transfer_call, numbers: ["{TRANSFER_TO}"]}}\n')
            cm = run_daemon(config, env=env)
            daemon = await asyncio.to_thread(cm.__enter__)  # the daemon may call the fakes while starting
            try:
                await driver.attach(daemon.base_url)
                setup = CarrierSetup(
                    driver, EngineAgent(engine), daemon.base_url, features=features, transfer_to=TRANSFER_TO
                )
                yield World(setup, driver, engine, tool, daemon, records)
            finally:
                await driver.detach()
                await asyncio.to_thread(cm.__exit__, None, None, None)
    finally:
        await driver.close()
        await tool.close()


# Every carrier patterd ships, and the sample plugin's: name → its driver.
DRIVERS: dict[str, Callable[[], Driven]] = {
    "twilio": TwilioDriver,
    "telnyx": TelnyxDriver,
    "local": SoftphoneDriver,
    "plivo": PlivoDriver,
    "signalwire": SignalWireDriver,
    "vonage": VonageDriver,
    "sample": SampleDriver,
}


@asynccontextmanager
async def named_world(name: str, tmp: Path) -> AsyncIterator[World]:
    """`carrier_world` for a carrier of DRIVERS (the softphone offers none of the optional features;
    the sample carrier is installed as a third-party distribution the daemon finds by entry point)."""
    env: dict[str, str] = {}
    if name == "sample":
        site = install_sample(tmp / "site")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    features = frozenset() if name == "local" else ALL_FEATURES
    async with carrier_world(DRIVERS[name](), tmp, features=features, env=env) as world:
        yield world
