"""Twilio's wire across replicas: the <Stream> token admits media on another replica; control falls back to REST."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.cluster.replicas import SECRET, eventually, get_json, redis_keys_cleaned
from tests.fakes.twilio import FakeTwilio, FakeTwilioRest
from tests.inprocess_daemon import running_daemon

NUMBER = "+15550001234"


def twilio_config(root: Path, name: str, rest: FakeTwilioRest, redis_url: str, prefix: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(
        f"""
carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token}, base_url: '{rest.base_url}'}}
phone_number: "{NUMBER}"
webhook_url: gw.example.com
persist: {root / name}
cluster: {{secret: {SECRET}, redis: "{redis_url}", replica_id: {name}, key_prefix: "{prefix}", heartbeat_secs: 0.2}}
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""
    )
    return path


async def test_twilio_media_on_another_replica_and_hangup_through_the_carrier(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with FakeTwilioRest() as rest:
        a_cfg = twilio_config(tmp_path, "a", rest, redis_url, redis_prefix)
        b_cfg = twilio_config(tmp_path, "b", rest, redis_url, redis_prefix)
        async with (
            redis_keys_cleaned(redis_url, redis_prefix),
            running_daemon(a_cfg) as (a, a_url, _),
            running_daemon(b_cfg) as (b, b_url, _),
            FakeTwilio(a_url, "gw.example.com", rest=rest) as twilio_a,
            FakeTwilio(b_url, "gw.example.com", rest=rest) as twilio_b,
            aiohttp.ClientSession() as http,
        ):
            call = await twilio_a.inbound_call(to=NUMBER, connect=False)  # the webhook lands on a
            assert call.twiml is not None and "call_token" in call.twiml.parameters
            call.net = twilio_b  # ... the load balancer sends the <Stream> websocket to b
            await call.connect_media()
            call_id = call.twiml.parameters["call_id"]

            async def on_b() -> bool:
                return call_id in b.switchboard.calls and b.switchboard.calls[call_id].media_connected

            await eventually(on_b, "the Twilio call running on b")

            async def handed_over() -> bool:
                return call_id not in a.switchboard.calls

            await eventually(handed_over, "a dropping its ringing copy")

            # b stops answering its control channel (gone, its heartbeat not yet expired): a hangup through
            # a goes to Twilio's REST API with the CallSid from the registry
            assert b.cluster is not None
            await b.cluster.relay.close()
            for task in b.cluster._tasks:
                task.cancel()
            async with http.post(f"{a_url}/api/v1/calls/{call_id}/hangup") as resp:
                body = await resp.json()
                assert resp.status == 202 and body["via"] == "carrier", json.dumps(body)

            async def completed_at_twilio() -> bool:
                return rest.calls[call.call_sid].status == "completed"

            await eventually(completed_at_twilio, "Twilio told to complete the call")
            status = await get_json(http, a_url + "/api/v1/status")
            assert status["cluster"]["replica"] == "a"
