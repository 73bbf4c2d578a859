"""The softphone's dialect: numbered media frames, the `turn` announcement and the validated `heard` report."""

from __future__ import annotations

import json

import pytest

from patterd.protocols import frames
from patterd.protocols import local as proto
from patterd.protocols.events import CallerAudio, CallerHeard

PAYLOAD = "f39/fw=="  # 4 bytes of μ-law


def media(chunk: object = None) -> str:
    body: dict[str, object] = {"payload": PAYLOAD}
    if chunk is not None:
        body["chunk"] = chunk
    return json.dumps({"event": "media", "media": body})


def heard(turn: object, ms: object) -> str:
    return json.dumps({"event": "heard", "heard": {"turn": turn, "ms": ms}})


def reason(codec: proto.SoftphoneCodec, frame: str) -> str:
    with pytest.raises(proto.LocalProtocolError) as info:
        codec.receive(frame)
    assert info.value.reason in frames.REASONS
    return info.value.reason


def test_frames_are_named_by_their_chunk_and_a_turn_is_announced_by_it() -> None:
    codec = proto.SoftphoneCodec()
    for chunk in range(1, 6):
        assert codec.receive(media(chunk)) == (CallerAudio(b"\x7f\x7f\x7f\x7f"),)
    assert codec.frames == 5
    assert codec.chunk_of(3) == 3 and codec.chunk_of(6) is None and codec.chunk_of(0) is None
    assert json.loads(codec.turn(1, 4, 512.3) or "") == {"event": "turn", "turn": {"id": 1, "chunk": 4}}
    # A frame without a (usable) chunk still carries audio; it just cannot be named, so no turn ends on it.
    codec.receive(media())
    codec.receive(media(True))
    codec.receive(media(-3))
    assert codec.frames == 8 and codec.turn(2, 8, 100.0) is None
    codec.receive(media(40))  # numbered again (the page counts what it sent; the daemon what it got)
    assert codec.chunk_of(9) == 40 and codec.chunk_of(5) == 5


def test_a_report_is_taken_once_per_announced_turn_and_in_range() -> None:
    codec = proto.SoftphoneCodec()
    for chunk in range(1, 4):
        codec.receive(media(chunk))
    codec.turn(1, 3, 500.0)
    codec.turn(2, 3, 300.0)
    codec.turn(3, 3, 300.0)
    codec.turn(4, 3, 300.0)
    assert codec.receive(heard(1, 512.5)) == (CallerHeard(1, 512.5),)
    assert codec.receive(heard(2, 299.9)) == (CallerHeard(2, 299.9),)  # 0.1 ms under: the two roundings
    assert reason(codec, heard(1, 512.5)) == "unexpected_report"  # once
    assert reason(codec, heard(9, 512.5)) == "unexpected_report"  # never announced
    assert reason(codec, heard(3, 250.0)) == "bad_report"  # heard before the daemon sent it
    assert reason(codec, heard(3, 300.0)) == "unexpected_report"  # a refused report used the turn up
    assert reason(codec, heard(4, 300.0 + proto.MAX_NETWORK_MS + 1)) == "bad_report"


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (heard("1", 10.0), "bad_shape"),
        (heard(True, 10.0), "bad_shape"),
        (heard(1, "10"), "bad_report"),
        (heard(1, None), "bad_report"),
        (heard(1, False), "bad_report"),
        ('{"event":"heard","heard":{"turn":1,"ms":NaN}}', "bad_report"),
        ('{"event":"heard","heard":{"turn":1,"ms":Infinity}}', "bad_report"),
        ('{"event":"heard","heard":{"turn":1}}', "bad_shape"),
        ('{"event":"heard","heard":[1, 10]}', "bad_shape"),
    ],
)
def test_malformed_reports_are_bad_frames(frame: str, why: str) -> None:
    codec = proto.SoftphoneCodec()
    codec.receive(media(1))
    codec.turn(1, 1, 5.0)
    assert reason(codec, frame) == why
    # A malformed report does not use the turn up.
    assert codec.receive(heard(1, 10.0)) == (CallerHeard(1, 10.0),)


def test_only_recent_turns_can_be_reported() -> None:
    codec = proto.SoftphoneCodec()
    codec.receive(media(1))
    for turn in range(1, proto.TURNS_KEPT + 2):
        codec.turn(turn, 1, 5.0)
    assert reason(codec, heard(1, 6.0)) == "unexpected_report"
    assert codec.receive(heard(proto.TURNS_KEPT + 1, 6.0)) == (CallerHeard(proto.TURNS_KEPT + 1, 6.0),)
