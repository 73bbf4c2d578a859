"""The Twilio carrier's options and REST side: calls placed, hung up, transferred and recorded, numbers pointed.

Followed: twilio.com /docs/voice/api/call-resource (create: Url, StatusCallback, StatusCallbackEvent,
MachineDetection, AsyncAmd, AsyncAmdStatusCallback; update: Status=completed, Twiml),
/docs/voice/api/recording (create on a live call, RecordingStatusCallback),
/docs/phone-numbers/api/incomingphonenumber-resource (VoiceUrl), /docs/usage/twilios-response (error
JSON: code, message, more_info, status).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from pydantic import Field, SecretStr, model_validator

from patterd.errors import (
    ProviderError,
    ProviderProtocolError,
)
from patterd.lazy import lazy_import
from patterd.protocols import twilio as proto
from patterd.providers import rest_call
from patterd.providers.kinds import DialRequest
from patterd.providers.spec import (
    BuildContext,
    ProviderOptions,
    env_secret,
    env_str,
    missing_credentials,
)

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

CARRIER = "twilio"
REST = rest_call.RestApi(
    CARRIER,
    "Twilio",
    "check account_sid and auth_token",
    rest_call.twilio_style_reason,  # {code, message, more_info, status}
    retry_after_cap_secs=5.0,
)
API_VERSION = "2010-04-01"
_KNOWN_CALLS_LIMIT = 10_000  # CallSid → call_id entries kept for callbacks that lack our id


class Options(ProviderOptions):
    """`carrier: {type: twilio, ...}`."""

    account_sid: str | None = Field(default_factory=env_str("TWILIO_ACCOUNT_SID"))
    auth_token: SecretStr | None = Field(default_factory=env_secret("TWILIO_AUTH_TOKEN"))
    base_url: str = "https://api.twilio.com"
    validate_signatures: bool = True
    status_callback_events: tuple[Literal["initiated", "ringing", "answered", "completed"], ...] = (
        "initiated",
        "ringing",
        "answered",
        "completed",
    )
    machine_detection: Literal["DetectMessageEnd", "Enable"] = "DetectMessageEnd"
    timeout_secs: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff_secs: float = Field(default=0.25, ge=0)
    stream_start_timeout_secs: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> Options:
        problem = missing_credentials(
            "Twilio carrier",
            (
                ("account_sid", "TWILIO_ACCOUNT_SID", self.account_sid),
                ("auth_token", "TWILIO_AUTH_TOKEN", self.auth_token),
            ),
        )
        if problem:
            raise ValueError(problem)
        return self


class TwilioRest:
    """Twilio's REST API over one aiohttp session, and the CallSid → call id map its callbacks need."""

    def __init__(self, options: Options, ctx: BuildContext, session: aiohttp.ClientSession) -> None:
        assert options.account_sid is not None and options.auth_token is not None  # the validator saw to it
        self.options = options
        self._ctx = ctx
        self._session = session
        self._sid = options.account_sid
        self._token = options.auth_token.get_secret_value()
        self._api = f"{options.base_url.rstrip('/')}/{API_VERSION}/Accounts/{quote(self._sid, safe='')}"
        self._call_ids: OrderedDict[str, str] = OrderedDict()  # CallSid → our call id

    def _remember(self, call_sid: str, call_id: str) -> None:
        self._call_ids[call_sid] = call_id
        self._call_ids.move_to_end(call_sid)
        while len(self._call_ids) > _KNOWN_CALLS_LIMIT:
            self._call_ids.popitem(last=False)

    # ---------------------------------------------------------------- REST

    def _public(self, hook: str, call_id: str) -> str:
        return self._ctx.public_url(f"/webhooks/twilio/{hook}?" + urlencode({"call_id": call_id}))

    async def dial(self, request: DialRequest) -> str:
        """POST Calls.json; Twilio fetches our voice webhook (carrying our call id) when the callee answers."""
        data: list[tuple[str, str]] = [
            ("To", request.to),
            ("From", request.from_),
            ("Url", self._public("voice", request.call_id)),
            ("Method", "POST"),
            ("StatusCallback", self._public("status", request.call_id)),
            ("StatusCallbackMethod", "POST"),
        ]
        data += [("StatusCallbackEvent", event) for event in self.options.status_callback_events]
        if request.machine_detection:
            data += [
                ("MachineDetection", self.options.machine_detection),
                ("AsyncAmd", "true"),
                ("AsyncAmdStatusCallback", self._public("amd", request.call_id)),
                ("AsyncAmdStatusCallbackMethod", "POST"),
            ]
        answer = await self._request("POST", "/Calls.json", data)
        sid = answer.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ProviderProtocolError(
                f"Twilio Calls.json answer without a call sid: {answer!r:.200}", provider=CARRIER
            )
        self._remember(sid, request.call_id)
        return sid

    async def hangup(self, carrier_call_id: str) -> None:
        """Update the call with Status=completed."""
        await self._request(
            "POST", f"/Calls/{quote(carrier_call_id, safe='')}.json", [("Status", "completed")]
        )

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        """Replace the call's TwiML with `<Dial>to</Dial>` (ends the media stream)."""
        await self._request(
            "POST", f"/Calls/{quote(carrier_call_id, safe='')}.json", [("Twiml", proto.dial(to))]
        )

    async def start_recording(self, carrier_call_id: str) -> None:
        """Start recording a live call; Twilio POSTs /webhooks/twilio/recording when it is saved."""
        data = [("RecordingStatusCallbackEvent", "completed"), ("RecordingStatusCallbackMethod", "POST")]
        call_id = self._call_ids.get(carrier_call_id)
        callback = (
            self._public("recording", call_id)
            if call_id
            else self._ctx.public_url("/webhooks/twilio/recording")
        )
        data.append(("RecordingStatusCallback", callback))
        await self._request("POST", f"/Calls/{quote(carrier_call_id, safe='')}/Recordings.json", data)

    async def configure_number(self, phone_number: str, voice_url: str) -> str:
        """Point the number's voice webhook at `voice_url` (tunnel auto-configuration); returns its sid."""
        found = await self._request("GET", "/IncomingPhoneNumbers.json", params={"PhoneNumber": phone_number})
        numbers = found.get("incoming_phone_numbers")
        if not isinstance(numbers, list) or not numbers or not isinstance(numbers[0], dict):
            raise ProviderError(
                f"Twilio account {self._sid} has no incoming phone number {phone_number}", provider=CARRIER
            )
        number_sid = str(numbers[0].get("sid", ""))
        await self._request(
            "POST",
            f"/IncomingPhoneNumbers/{quote(number_sid, safe='')}.json",
            [("VoiceUrl", voice_url), ("VoiceMethod", "POST")],
        )
        return number_sid

    async def check(self) -> None:
        """Fetch the account: proves the base URL answers and the credentials are accepted."""
        await self._request("GET", "")

    async def _request(
        self,
        method: str,
        path: str,
        data: Sequence[tuple[str, str]] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One REST call with retries for retryable failures (429, 5xx, connection errors)."""
        body = urlencode(list(data)).encode() if data is not None else None
        return await rest_call.send(
            REST,
            self._session,
            method,
            self._api + (path or ".json"),
            shown=path or ".json",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"} if body is not None else None,
            params=params,
            max_attempts=self.options.max_attempts,
            backoff_secs=self.options.retry_backoff_secs,
        )
