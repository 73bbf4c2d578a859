"""`recording` modes and `recording_notice` on a session: who records, the old `true`, a carrier that cannot."""

from __future__ import annotations

import pydantic
import pytest

from patterd.config.model import AgentConfig
from patterd.protocols.events import CallFailed, StreamStarted
from tests.calls.fakes import Rig, rig


async def run_call(r: Rig) -> None:
    r.leg.feed(StreamStarted("s1"))
    r.connect()
    await r.engine.wait_session()
    r.leg.hang_up()
    await r.ended()  # the carrier recording, when asked for, is started as the call connects


@pytest.mark.parametrize(
    ("value", "locally", "on_carrier"),
    [
        (True, False, True),
        ("carrier", False, True),
        ("both", True, True),
        ("local", True, False),
        (False, False, False),
    ],
)
async def test_who_records(value: object, locally: bool, on_carrier: bool) -> None:
    r = rig(agent={"recording": value})
    config = r.session.agent.config
    assert (config.records_locally, config.records_on_carrier) == (locally, on_carrier)
    assert config.recording == ("carrier" if value is True else value)  # `true` keeps meaning the carrier's
    await run_call(r)
    assert r.carrier.recordings == (["CA1"] if on_carrier else [])


async def test_a_carrier_that_cannot_record_is_not_asked() -> None:
    r = rig(agent={"recording": True})
    r.carrier.records_calls = False  # type: ignore[attr-defined]  # what the browser phone's carrier says
    await run_call(r)
    assert r.carrier.recordings == [] and r.log.of(CallFailed) == []


def test_other_values_are_refused() -> None:
    for bad in ("yes", "remote", 1):
        with pytest.raises(pydantic.ValidationError):
            AgentConfig.model_validate({"name": "a", "recording": bad}, context={"pipeline_checked": True})


def test_the_notice_opens_the_first_message() -> None:
    notice = "This call may be recorded."
    r = rig(agent={"recording_notice": notice, "first_message": "Hello {who}!", "variables": {"who": "Ann"}})
    assert r.session.first_message == "This call may be recorded. Hello Ann!"
    assert rig(agent={"recording_notice": notice}).session.first_message == notice  # said even without one
    assert rig(agent={"first_message": "Hi"}).session.first_message == "Hi"
