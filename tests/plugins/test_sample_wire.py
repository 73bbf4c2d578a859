"""The sample plugin carrier's sans-I/O wire: webhook signatures and the media codec (incl. fuzzed frames)."""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped
from patterd.protocols.frames import BadFrame
from patterd.protocols.media_codec import Notice
from tests.plugins.sample_site import SAMPLE


@pytest.fixture(scope="module")
def wire() -> Iterator[ModuleType]:
    sys.path.insert(0, str(SAMPLE))
    try:
        from patterd_sample import wire as module  # type: ignore[import-not-found]

        yield module
    finally:
        sys.path.remove(str(SAMPLE))
        for name in [m for m in sys.modules if m == "patterd_sample" or m.startswith("patterd_sample.")]:
            sys.modules.pop(name)


def test_signatures(wire: ModuleType) -> None:
    body, now = b'{"call": "c1"}', 1_700_000_000.0
    good = wire.sign("s3cret", "1700000000", body)
    assert wire.verify("s3cret", "1700000000", good, body, now)
    assert not wire.verify("other", "1700000000", good, body, now)  # another secret
    assert not wire.verify("s3cret", "1700000000", good, body + b" ", now)  # another body
    assert not wire.verify("s3cret", "1700000000", good, body, now + 301)  # stale
    assert not wire.verify("s3cret", "17e8", good, body, now)
    assert not wire.verify("s3cret", None, good, body, now) and not wire.verify(
        "s3cret", "1", None, body, now
    )


def test_codec_both_ways(wire: ModuleType) -> None:
    codec = wire.SampleCodec()
    started = codec.receive(json.dumps({"type": "start", "call": "sc-1", "call_id": "call_1"}))
    assert started == (StreamStarted("sc-1", "sc-1", {"call_id": "call_1"}),)
    with pytest.raises(BadFrame):
        codec.receive('{"type": "start", "call": "sc-2"}')  # a second start would steal the stream
    audio = base64.b64encode(b"\x01" * 160).decode()
    assert codec.receive(json.dumps({"type": "audio", "ulaw": audio})) == (CallerAudio(b"\x01" * 160),)
    assert codec.receive('{"type": "dtmf", "digit": "#"}') == (CallerDtmf("#"),)
    assert codec.receive('{"type": "played", "mark": "m1"}') == (MarkPlayed("m1"),)
    assert isinstance(codec.receive('{"type": "hello"}')[0], Notice)
    assert isinstance(codec.receive('{"type": "stop"}')[0], StreamStopped)
    for frame, reason in (
        ('{"type": "audio", "ulaw": "%%%"}', "bad_audio"),
        ('{"type": "dtmf", "digit": "x"}', "bad_shape"),
        ("[1]", "not_json"),
        ("not json", "not_json"),
        (b"\x00\x01", "bad_shape"),
    ):
        with pytest.raises(BadFrame) as refused:
            codec.receive(frame)
        assert refused.value.reason == reason, frame
    assert json.loads(codec.media(b"\xff\x00")) == {"type": "audio", "ulaw": "/wA="}
    assert json.loads(codec.mark("m2")) == {"type": "mark", "name": "m2"}
    assert json.loads(codec.clear()) == {"type": "clear"}


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200), st.binary(max_size=64), st.from_regex(r'\{"type": ?"[a-z]{0,8}".{0,40}\}')
    )
)
def test_codec_refuses_any_frame_only_with_bad_frame(wire: ModuleType, frame: str | bytes) -> None:
    """Whatever arrives, the codec returns events or raises BadFrame (the leg drops and counts it)."""
    with contextlib.suppress(BadFrame):
        wire.SampleCodec().receive(frame)
