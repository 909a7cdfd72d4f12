"""The one redaction step every text passes before it leaves the process.

An error text can quote what it was given: a provider's 401 echoes the
``Authorization`` header, a 400 quotes the prompt it refused. Before such a text
reaches a span, a log line, an error raised to the caller, another request's
selection reasons or a store row, :func:`redact` removes

- API keys: every key the caller knows (``secrets``) and anything shaped like one
  (``sk-...``, ``AIza...``, ``Bearer <token>``, ``?key=...``), as ``***``;
- request and response text (``contents``): any run of at least
  :data:`MIN_QUOTED_CHARS` characters of a message, also as JSON escapes it, as
  ``[redacted prompt]``. Callers pass ``contents`` unless the user opted in to
  content capture (:func:`content_capture_enabled`).

>>> redact("401: Bearer sk-abcdefghijklmnopqrstu", secrets=())
'401: Bearer ***'
>>> redact("bad input: 'Tell me about the merger plan'", contents=["Tell me about the merger plan"])
"bad input: '[redacted prompt]'"

This module imports nothing of amm, so the recorder and amm share it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MIN_QUOTED_CHARS",
    "REDACTED_KEY",
    "REDACTED_PROMPT",
    "content_capture_enabled",
    "message_texts",
    "redact",
]

REDACTED_KEY = "***"
"""What a key becomes."""
REDACTED_PROMPT = "[redacted prompt]"
"""What a quoted piece of request or response text becomes."""
MIN_QUOTED_CHARS = 12
"""Shorter common runs ("the model is") are left alone: too common to be a quote."""

# Longest first so that a shape never leaves the tail of a longer key behind.
_KEY_SHAPES = (
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE), r"\1" + REDACTED_KEY),
    (re.compile(r"sk-[A-Za-z0-9_\-]{17,}"), REDACTED_KEY),
    (re.compile(r"AIza[0-9A-Za-z_\-]{30,}"), REDACTED_KEY),
    (re.compile(r"([?&](?:key|api_key|api-key)=)[^&\s\"']+", re.IGNORECASE), r"\1" + REDACTED_KEY),
    (re.compile(r"((?:x-api-key|x-goog-api-key|api[_-]?key)[\"']?\s*[:=]\s*[\"']?)"
                r"[^\s\"',}]{8,}", re.IGNORECASE), r"\1" + REDACTED_KEY),
)


def redact(text: str, *, secrets: Iterable[str] = (), contents: Iterable[str] = ()) -> str:
    """``text`` without keys, and without any quoted run of ``contents`` (module docstring).

    ``secrets`` are the keys known to the caller; ``contents`` the request's (and
    response's) texts, given only when content capture is off.
    """
    if not text:
        return text
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED_KEY)
    for pattern, replacement in _KEY_SHAPES:
        text = pattern.sub(replacement, text)
    sources = _variants(contents)
    return _strip_quotes(text, sources) if sources else text


def message_texts(messages: Iterable[Mapping[str, Any]] | None, *extra: str | None) -> list[str]:
    """Every text of chat ``messages`` (string contents, text parts, tool arguments)
    and of ``extra`` texts (a completion), long enough to be quoted."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if len(value) >= MIN_QUOTED_CHARS:
                found.append(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    for message in messages or ():
        walk(message)
    for text in extra:
        walk(text)
    return found


def content_capture_enabled(explicit: str | bool | None = None) -> bool:
    """Did the user opt in to content capture (argument, else
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``)? When not, callers pass
    the request's texts to :func:`redact`."""
    from telemetry.content import ContentPolicy
    from telemetry.conventions import CONTENT_NO_CONTENT

    return ContentPolicy.resolve(explicit).mode != CONTENT_NO_CONTENT


def _variants(contents: Iterable[str]) -> list[str]:
    # A provider quotes a prompt as it is or as it sits in its JSON body (\n, \").
    out: list[str] = []
    for content in contents:
        if not isinstance(content, str) or len(content) < MIN_QUOTED_CHARS:
            continue
        out.append(content)
        escaped = json.dumps(content, ensure_ascii=False)[1:-1]
        if escaped != content:
            out.append(escaped)
    return out


def _strip_quotes(text: str, sources: list[str]) -> str:
    """Replace every run of >= MIN_QUOTED_CHARS characters of ``text`` found in a
    source; greedy from the left, each run as long as it goes."""
    pieces: list[str] = []
    i = start = 0
    n = len(text)
    while i + MIN_QUOTED_CHARS <= n:
        end = _longest_run(text, i, sources)
        if end is None:
            i += 1
            continue
        pieces.append(text[start:i])
        pieces.append(REDACTED_PROMPT)
        i = start = end
    if not pieces:
        return text
    pieces.append(text[start:])
    return "".join(pieces)


def _longest_run(text: str, i: int, sources: list[str]) -> int | None:
    best: int | None = None
    for source in sources:
        if text[i:i + MIN_QUOTED_CHARS] not in source:
            continue
        # Grow by doubling, then bisect: O(log n) substring searches per run.
        lo, step = i + MIN_QUOTED_CHARS, 1
        while lo + step <= len(text) and text[i:lo + step] in source:
            lo += step
            step *= 2
        hi = min(lo + step, len(text) + 1)  # text[i:hi] is not in source (or past the end)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if text[i:mid] in source:
                lo = mid
            else:
                hi = mid
        if best is None or lo > best:
            best = lo
    return best
