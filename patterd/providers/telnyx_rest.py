"""The Telnyx carrier's options and REST side: Call Control commands with retries that keep their command_id.

The REST API is `https://api.telnyx.com/v2` with Bearer auth; a retried command reuses its
`command_id`, so Telnyx never acts on it twice. Wire formats live in `patterd.protocols.telnyx`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderConnectionError, ProviderRateLimitError, error_for_status
from patterd.lazy import lazy_import
from patterd.protocols import jsontext
from patterd.protocols import telnyx as proto
from patterd.providers.spec import ProviderOptions, env_secret, env_str, missing_credentials

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

log = structlog.get_logger("patterd.providers.telnyx")

CARRIER = "telnyx"
UNAUTHENTICATED_WARNING = "Telnyx webhooks are unauthenticated: set TELNYX_PUBLIC_KEY"
_CALL_ENDED_CODE = "90018"  # "Call has already ended": a hangup that raced the far end is a success


class TelnyxOptions(ProviderOptions):
    """`carrier: {type: telnyx, ...}`."""

    api_key: SecretStr | None = Field(default_factory=env_secret("TELNYX_API_KEY"))
    connection_id: str | None = Field(default_factory=env_str("TELNYX_CONNECTION_ID"))
    public_key: str | None = Field(
        default_factory=env_str("TELNYX_PUBLIC_KEY"),
        description="Ed25519 webhook public key (base64) from the Telnyx portal; without it webhooks are not authenticated",
    )
    base_url: str = "https://api.telnyx.com"
    machine_detection_mode: proto.AmdMode = Field(
        default="greeting_end",
        description="answering_machine_detection sent on dial when AMD is asked for; greeting_end also reports when the greeting ends (voicemail drop)",
    )
    stream_on_dial: bool = Field(
        default=True,
        description="request the media stream in the dial command (else streaming_start on answer)",
    )
    recording_format: Literal["mp3", "wav"] = "mp3"
    recording_channels: Literal["single", "dual"] = "dual"
    request_timeout_secs: float = 10.0
    max_attempts: int = Field(
        default=3, ge=1, description="tries per REST command on network errors, 5xx and 429"
    )
    retry_backoff_ms: int = Field(default=250, ge=0)
    signature_tolerance_secs: int = Field(default=proto.SIGNATURE_TOLERANCE_SECS, ge=1)

    @model_validator(mode="after")
    def _required(self) -> TelnyxOptions:
        problem = missing_credentials(
            "Telnyx carrier",
            (
                ("api_key", "TELNYX_API_KEY", self.api_key),
                ("connection_id", "TELNYX_CONNECTION_ID", self.connection_id),
            ),
        )
        if problem:
            raise ValueError(problem)
        if self.public_key:
            try:
                proto.public_key_b64_to_bytes(self.public_key)
            except ValueError as exc:
                raise ValueError(f"public_key (TELNYX_PUBLIC_KEY) is invalid: {exc}") from exc
        return self

    def config_warnings(self) -> list[str]:
        """Allowed but unwise settings, printed by `patterd check`."""
        return [] if self.public_key else [UNAUTHENTICATED_WARNING]


class TelnyxRest:
    """Telnyx Call Control commands over one aiohttp session (the carrier's REST side)."""

    def __init__(self, options: TelnyxOptions, session: aiohttp.ClientSession) -> None:
        self.options = options
        self._session = session
        self._base = options.base_url.rstrip("/")
        assert options.api_key is not None  # the validator guarantees it
        self._auth = {
            "Authorization": f"Bearer {options.api_key.get_secret_value()}",
            "Accept": "application/json",
        }
        self._connection_id = options.connection_id or ""

    async def hangup(self, carrier_call_id: str) -> None:
        """End a live call (a call that already ended counts as hung up)."""
        body = proto.hangup_command(command_id=str(uuid.uuid4()))
        await self._command(carrier_call_id, "hangup", body, ok_codes=frozenset({_CALL_ENDED_CODE}))

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        """Transfer the caller to `to` (our leg leaves the call when the transfer connects)."""
        await self._command(
            carrier_call_id, "transfer", proto.transfer_command(to, command_id=str(uuid.uuid4()))
        )

    async def start_recording(self, carrier_call_id: str) -> None:
        """Start recording the call; `call.recording.saved` reports the file."""
        body = proto.record_start_command(
            command_id=str(uuid.uuid4()),
            format=self.options.recording_format,
            channels=self.options.recording_channels,
        )
        await self._command(carrier_call_id, "record_start", body)

    async def stop_recording(self, carrier_call_id: str) -> None:
        """Stop recording the call."""
        await self._command(
            carrier_call_id, "record_stop", proto.record_stop_command(command_id=str(uuid.uuid4()))
        )

    async def send_dtmf(self, carrier_call_id: str, digits: str) -> None:
        """Play DTMF digits into the call."""
        await self._command(
            carrier_call_id, "send_dtmf", proto.send_dtmf_command(digits, command_id=str(uuid.uuid4()))
        )

    async def probe(self) -> None:
        """Check the API key and connection_id: `GET /v2/call_control_applications/{connection_id}`."""
        await self._request("GET", f"/v2/call_control_applications/{self._connection_id}", None)

    async def _command(
        self,
        call_control_id: str,
        action: proto.Action,
        body: dict[str, Any],
        ok_codes: frozenset[str] = frozenset(),
    ) -> None:
        await self._request("POST", proto.command_path(call_control_id, action), body, ok_codes)

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None, ok_codes: frozenset[str] = frozenset()
    ) -> Any:
        """One REST call with retries on network errors, 5xx and 429 (same body, so the same command_id).

        An error whose Telnyx code is in `ok_codes` counts as success (returns None).
        """
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._request_once(method, path, body, ok_codes)
            except (ProviderConnectionError, ProviderRateLimitError) as exc:
                if attempt == attempts:
                    raise
                delay = self.options.retry_backoff_ms / 1000 * 2 ** (attempt - 1)
                log.warning(
                    "telnyx request retried", method=method, path=path, attempt=attempt, error=str(exc)
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request_once(
        self, method: str, path: str, body: dict[str, Any] | None, ok_codes: frozenset[str]
    ) -> Any:
        url = self._base + path
        timeout = aiohttp.ClientTimeout(total=self.options.request_timeout_secs)
        try:
            async with self._session.request(
                method, url, json=body, headers=self._auth, timeout=timeout
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(
                f"Telnyx {method} {path}: cannot reach {self._base}: {type(exc).__name__}: {exc}",
                provider=CARRIER,
            ) from exc
        try:
            doc: Any = jsontext.loads(text) if text else {}
        except jsontext.JSONError:
            doc = {}
        if 200 <= status < 300:
            return doc.get("data") if isinstance(doc, dict) else None
        if ok_codes.intersection(proto.error_codes(doc)):
            return None
        detail = proto.error_detail(doc) or text[:200] or "no detail"
        message = f"Telnyx {method} {path} → HTTP {status}: {detail}"
        raise error_for_status(status, message, provider=CARRIER, auth_hint="check api_key / TELNYX_API_KEY")
