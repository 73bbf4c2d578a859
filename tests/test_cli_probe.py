"""`patterd check --probe` builds the providers and checks credentials against (fake) vendor servers."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.twilio import FakeTwilioRest

CONFIG = """
carrier:
  type: twilio
  account_sid: {sid}
  auth_token: {token}
  base_url: {base_url}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""


async def probe(config: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "PATTER"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "patterd",
        "check",
        "--probe",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_probe_passes_with_good_credentials_and_fails_with_bad(tmp_path: Path) -> None:
    async with FakeTwilioRest() as rest:
        good = tmp_path / "good.yaml"
        good.write_text(CONFIG.format(sid=rest.account_sid, token=rest.auth_token, base_url=rest.base_url))
        code, out = await probe(good)
        assert code == 0, out
        assert "carrier: ok" in out
        assert any(r.path.endswith(f"/Accounts/{rest.account_sid}.json") for r in rest.requests)

        bad = tmp_path / "bad.yaml"
        bad.write_text(CONFIG.format(sid=rest.account_sid, token="wrong-token", base_url=rest.base_url))
        code, out = await probe(bad)
        assert code == 1, out
        assert "carrier: ProviderAuthError" in out
        assert "wrong-token" not in out
