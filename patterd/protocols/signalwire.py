"""SignalWire's compatibility (cXML/LaML) wire formats: where they are Twilio's, and where they differ.

The same as Twilio (reused from `patterd.protocols.twilio`, not copied): cXML is TwiML (`<Connect>
<Stream>` with `<Parameter>` children, `<Reject>`, `<Dial>`), the bidirectional media stream speaks
Twilio's Media Streams messages (`connected`, `start`, `media`, `dtmf`, `mark`, `stop` in; `media`,
`mark`, `clear` out; μ-law 8 kHz by default, `codec` PCMU@8000h), and the webhooks post Twilio's
form fields (CallSid, From, To, Direction, CallStatus, ...).

Where SignalWire differs (developer.signalwire.com compatibility-api: cxml/voice/stream, rest/,
guides/webhook-security; and signalwire-python 2.0.4 `signalwire/rest/__init__.py`):
- REST root: `https://{space}.signalwire.com/api/laml/2010-04-01/Accounts/{project id}/...`, basic
  auth project id : API token (the 2.0.4 SDK puts Twilio's client on the space host; its paths are
  `/2010-04-01/...` without `/api/laml`, which the documented REST reference uses).
- Signatures: header `X-SignalWire-Signature` (compatibility callbacks also carry `X-Twilio-Signature`),
  keyed with the project's **Signing Key** from the dashboard, not with the API token. Form callbacks:
  Twilio's scheme (base64 HMAC-SHA1 over URL + sorted params, URL with and without its port — the
  2.0.4 SDK validates with twilio's RequestValidator). JSON callbacks: hex(HMAC-SHA1(key, URL + raw body)).
- Media websocket upgrade: no request signature; `<Stream authBearerToken="...">` makes SignalWire send
  `Authorization: Bearer <token>`, which we check (a per-call HMAC, `protocols.media_token`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from patterd.protocols import twilio

SIGNATURE_HEADER = "X-SignalWire-Signature"
COMPAT_SIGNATURE_HEADER = twilio.SIGNATURE_HEADER  # SignalWire sends both on compatibility callbacks
API_PATH = "/api/laml/2010-04-01"
XML_CONTENT_TYPE = twilio.TWIML_CONTENT_TYPE

# The parts of the protocol that are Twilio's, under the names this carrier uses.
StreamState = twilio.StreamState
Codec = twilio.TwilioCodec
ProtocolError = twilio.TwilioProtocolError
reject = twilio.reject
dial = twilio.dial
empty_response = twilio.empty_response


def connect_stream(url: str, parameters: Mapping[str, str] | None = None, bearer_token: str = "") -> str:
    """`<Connect><Stream url=... authBearerToken=...>` with one `<Parameter>` per item (bidirectional)."""
    params = "".join(
        f"<Parameter name={quoteattr(str(name))} value={quoteattr(str(value))}/>"
        for name, value in (parameters or {}).items()
    )
    attrs = f"url={quoteattr(url)}"
    if bearer_token:
        attrs += f" authBearerToken={quoteattr(bearer_token)}"
    stream = f"<Stream {attrs}>{params}</Stream>" if params else f"<Stream {attrs}/>"
    return f"{twilio.XML_DECLARATION}<Response><Connect>{stream}</Connect></Response>"


def space_base(space_url: str) -> str:
    """`https://example.signalwire.com` from `example.signalwire.com` or any URL on that host."""
    parts = urlsplit(space_url if "//" in space_url else "https://" + space_url)
    if not parts.netloc:
        raise ValueError(f"SignalWire space URL {space_url!r}: expected a host like example.signalwire.com")
    return f"{parts.scheme or 'https'}://{parts.netloc}"


def json_signature(signing_key: str, url: str, raw_body: str) -> str:
    """hex(HMAC-SHA1(signing key, URL + raw body)): how SignalWire signs JSON callbacks."""
    mac = hmac.new(signing_key.encode("utf-8"), (url + raw_body).encode("utf-8"), hashlib.sha1)
    return mac.hexdigest()


def validate_signature(
    signing_key: str,
    url: str,
    raw_body: str,
    form: twilio.Params | None,
    signature: str | None,
) -> bool:
    """Check an X-SignalWire-Signature: the JSON scheme on the raw body, else Twilio's on the form fields.

    `form` is None for a non-form body (then Twilio's bodySHA256 rule applies to `raw_body`).
    """
    if not signature:
        return False
    raw_ok = hmac.compare_digest(
        json_signature(signing_key, url, raw_body).encode(), signature.encode("utf-8", "replace")
    )
    compat_ok = twilio.validate_signature(signing_key, url, raw_body if form is None else form, signature)
    return raw_ok or compat_ok
