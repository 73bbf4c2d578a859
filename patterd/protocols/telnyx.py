"""Telnyx Call Control v2 and media streaming, sans-I/O: one import for its three wire formats.

Webhooks and signatures are in `telnyx_webhooks`, REST commands in `telnyx_commands`, the media
websocket (and its MediaCodec) in `telnyx_media`; this module re-exports all of them.

Followed (stored copies, 2026):
- developers.telnyx.com "Stream call media over WebSocket" (AsyncAPI `media-streaming.yml`): frames
  `connected`, `start` {stream_id, start: {call_control_id, client_state, media_format}}, `media`
  {sequence_number, media: {track, chunk, timestamp, payload}}, `dtmf`, `mark`, `error`, `stop`; to
  Telnyx `media` {media: {payload}}, `mark` {mark: {name}}, `clear`. "Media frame order is not
  guaranteed": `MediaDecoder` reorders by `media.chunk` in a small window.
- Call Control commands (`/v2/calls/{id}/actions/{answer|reject|hangup|transfer|streaming_start|
  record_start|record_stop|send_dtmf}`, dial `POST /v2/calls`) as typed by telnyx-python
  `types/calls/action_*_params.py` and `types/call_dial_params.py`; webhook payloads as typed by
  `types/call_hangup_webhook_event.py`, `call_machine_detection_ended.py`,
  `call_machine_premium_detection_ended_webhook_event.py`, `call_recording_saved_webhook_event.py`.
- Pitfall (protocols.md, deepgram/deepclaw#8): `stream_url` alone is one-way; bidirectional audio
  needs `stream_bidirectional_mode: "rtp"` and `stream_bidirectional_codec: "PCMU"`.
- Webhook signatures: telnyx-python `lib/webhook_verification.py` — Ed25519 (PyNaCl) over
  `f"{telnyx-timestamp}|{raw body}"`, timestamps more than 300 s away from now (either way) refused.
"""

from __future__ import annotations

from patterd.protocols.telnyx_commands import (
    Action,
    AmdMode,
    RejectCause,
    answer_command,
    command_path,
    dial_command,
    error_codes,
    error_detail,
    hangup_command,
    record_start_command,
    record_stop_command,
    reject_command,
    send_dtmf_command,
    stream_options,
    streaming_start_command,
    transfer_command,
)
from patterd.protocols.telnyx_media import (
    CHUNK_JUMP_LIMIT,
    RESYNC_AFTER,
    MediaDecoder,
    MediaStreamError,
    TelnyxCodec,
    encode_clear,
    encode_mark,
    encode_media,
)
from patterd.protocols.telnyx_webhooks import (
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_SECS,
    STREAM_CODEC,
    TIMESTAMP_HEADER,
    CallAnswered,
    CallControlEvent,
    CallHangup,
    CallInitiated,
    DtmfReceived,
    MachineDetectionEnded,
    MachineGreetingEnded,
    RecordingSaved,
    StreamingFailed,
    StreamingStarted,
    StreamingStopped,
    TelnyxProtocolError,
    UnknownEvent,
    WebhookEvent,
    answered_by,
    command_id_for,
    decode_client_state,
    encode_client_state,
    parse_webhook,
    public_key_b64_to_bytes,
    status_for_hangup,
    verify_signature,
)

__all__ = [
    "CHUNK_JUMP_LIMIT",
    "RESYNC_AFTER",
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_SECS",
    "STREAM_CODEC",
    "TIMESTAMP_HEADER",
    "Action",
    "AmdMode",
    "CallAnswered",
    "CallControlEvent",
    "CallHangup",
    "CallInitiated",
    "DtmfReceived",
    "MachineDetectionEnded",
    "MachineGreetingEnded",
    "MediaDecoder",
    "MediaStreamError",
    "RecordingSaved",
    "RejectCause",
    "StreamingFailed",
    "StreamingStarted",
    "StreamingStopped",
    "TelnyxCodec",
    "TelnyxProtocolError",
    "UnknownEvent",
    "WebhookEvent",
    "answer_command",
    "answered_by",
    "command_id_for",
    "command_path",
    "decode_client_state",
    "dial_command",
    "encode_clear",
    "encode_client_state",
    "encode_mark",
    "encode_media",
    "error_codes",
    "error_detail",
    "hangup_command",
    "parse_webhook",
    "public_key_b64_to_bytes",
    "record_start_command",
    "record_stop_command",
    "reject_command",
    "send_dtmf_command",
    "status_for_hangup",
    "stream_options",
    "streaming_start_command",
    "transfer_command",
    "verify_signature",
]
