"""The one redaction step: keys by value and by shape, quoted request text by runs."""

from __future__ import annotations

import json

from amm.health_checker import counts_against_health
from telemetry.redaction import REDACTED_PROMPT, message_texts, redact

PROMPT = "Draft the layoff announcement for the Berlin office\nand keep it quiet."


def test_known_keys_and_key_shaped_strings_become_stars() -> None:
    text = ("Bearer abc.def-ghi_jkl sk-proj-abcdefghijklmnopqrstu "
            "AIzaSyA0123456789abcdefghijklmnopqrstu "
            "https://x/v1?key=topsecret&alt=sse x-api-key: my-own-key-123 known-plain-secret")
    out = redact(text, secrets=["known-plain-secret"])
    for secret in ("abc.def-ghi_jkl", "abcdefghijklmnopqrstu", "AIzaSyA0", "topsecret",
                   "my-own-key-123", "known-plain-secret"):
        assert secret not in out
    assert "Bearer ***" in out and "?key=***&alt=sse" in out


def test_a_quoted_prompt_is_redacted_whole_in_part_and_json_escaped() -> None:
    contents = message_texts([{"role": "user", "content": PROMPT}])
    assert redact(f"400: bad input {PROMPT!r}", contents=contents).count(REDACTED_PROMPT) == 1
    assert "Berlin" not in redact("refused: 'the layoff announcement for the Ber...'",
                                  contents=contents)
    assert "Berlin" not in redact(f"body {json.dumps({'content': PROMPT})}", contents=contents)


def test_short_common_runs_and_unrelated_text_are_kept() -> None:
    contents = [PROMPT]
    assert redact("the model is overloaded", contents=contents) == "the model is overloaded"
    assert redact("", contents=contents) == ""


def test_message_texts_walks_parts_and_tool_arguments() -> None:
    texts = message_texts([
        {"role": "user", "content": [{"type": "text", "text": "a long enough text part"}]},
        {"role": "assistant",
         "tool_calls": [{"function": {"name": "f", "arguments": '{"q": "secret query"}'}}]},
    ], "the completion text here")
    assert texts == ["a long enough text part", '{"q": "secret query"}', "the completion text here"]


def test_a_request_refused_before_sending_does_not_count_against_health() -> None:
    assert not counts_against_health("client_error")
    assert not counts_against_health("bad_request")
    assert counts_against_health("500") and counts_against_health("malformed_response")
