"""The Realtime conversation state, sans-I/O: one response at a time, cancelled audio, cut-off items, replay."""

from __future__ import annotations

import json

from patterd.protocols import openai_realtime as rt
from patterd.protocols.openai_realtime_conversation import PENDING, Conversation, Line


def types(messages: list[str]) -> list[str]:
    return [json.loads(m)["type"] for m in messages]


def test_a_second_request_waits_for_the_response_in_progress() -> None:
    conv = Conversation()
    assert types(conv.request_response()) == ["response.create"]
    assert conv.active == PENDING
    assert conv.request_response() == []  # refused by the server if sent now
    conv.created("resp_1")
    assert conv.active == "resp_1"
    lines, after = conv.done("completed")
    assert lines == [] and types(after) == ["response.create"]
    assert conv.active == PENDING


def test_say_cancels_the_active_response_and_speaks_after_its_done() -> None:
    conv = Conversation()
    conv.request_response()
    conv.created("resp_1")
    conv.request_response()  # wanted after resp_1 ...
    assert types(conv.say("Leave a message", connected=True)) == ["response.cancel"]
    assert conv.cancelled("resp_1")
    _, after = conv.done("cancelled")
    assert len(after) == 1  # ... but the verbatim message replaces it
    assert "Leave a message" in json.loads(after[0])["response"]["instructions"]


def test_a_cancel_sent_before_the_id_is_known_applies_to_the_created_response() -> None:
    conv = Conversation()
    conv.request_response()
    conv.say("bye", connected=True)
    conv.created("resp_2")
    assert conv.cancelled("resp_2")


def test_say_while_disconnected_replaces_the_greeting_on_connect() -> None:
    conv = Conversation()
    assert conv.say("voicemail text", connected=False) == []
    conv.reconnected(response_wanted=False)
    assert conv.greeting("Hello!") is None
    resumed = conv.resume()
    assert "voicemail text" in json.loads(resumed[0])["response"]["instructions"]


def test_the_greeting_is_sent_once() -> None:
    conv = Conversation()
    greeting = conv.greeting("Hello!")
    assert greeting is not None and "Hello!" in greeting and conv.active == PENDING
    conv.reconnected(response_wanted=True)
    assert conv.greeting("Hello!") is None
    assert types(conv.resume()) == ["response.create"]  # the request queued before the reconnect


def test_barge_in_cancels_and_truncates_at_what_was_sent() -> None:
    conv = Conversation()
    conv.request_response()
    conv.created("resp_1")
    conv.item("item_1").sent_ms = 300.0
    messages, played = conv.barge_in(("item_1", 900))
    assert types(messages) == ["response.cancel", "conversation.item.truncate"]
    assert json.loads(messages[1])["audio_end_ms"] == 300  # never past what the server sent
    assert played == 900 and conv.cancelled("resp_1")
    assert conv.transcript_delta("item_1", "Hel") is None  # cut off: not shown live any more


def test_a_cut_off_item_is_recorded_at_response_done_with_what_was_said() -> None:
    conv = Conversation()
    conv.request_response()
    conv.created("resp_1")
    assert conv.transcript_delta("item_1", "Our hours ") == "Our hours "
    assert conv.transcript_delta("item_1", "are nine") == "Our hours are nine"
    lines, _ = conv.done("cancelled")
    assert lines == [Line("item_1", "Our hours are nine", True, None)]
    assert conv.transcript_done("item_1", "Our hours are nine to five.") is None  # recorded once
    conv.user_said("thanks")
    assert list(conv.history) == [("assistant", "Our hours are nine"), ("user", "thanks")]


def test_tool_names_come_from_the_item_when_the_arguments_event_lacks_one() -> None:
    conv = Conversation()
    conv.tool_added("call_1", "end_call")
    assert conv.tool_name("call_1", None) == "end_call"
    assert conv.tool_name("call_1", "transfer_call") == "transfer_call"


def test_errors_are_classified_by_what_they_mean_for_the_session() -> None:
    update = rt.SESSION_UPDATE_EVENT_ID
    assert (
        rt.error_kind(
            rt.ErrorEvent("invalid_request_error", "bad", None, "session.audio.output.voice", update)
        )
        == "voice_refused"
    )
    assert (
        rt.error_kind(rt.ErrorEvent("invalid_request_error", "bad", None, "session.tools", update))
        == "session_refused"
    )
    assert (
        rt.error_kind(rt.ErrorEvent("invalid_request_error", "x", "response_cancel_not_active")) == "benign"
    )
    assert rt.error_kind(rt.ErrorEvent("server_error", "oops")) == "reconnect"
    assert rt.error_kind(rt.ErrorEvent("invalid_request_error", "x", "session_expired")) == "reconnect"
    assert rt.error_kind(rt.ErrorEvent("invalid_request_error", "bad item")) == "failed"
