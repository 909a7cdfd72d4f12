"""What a provider said, in amm's terms: litellm exceptions mapped once, and headers read.

:func:`map_provider_error` is the one place where a litellm (or httpx, or JSON)
exception becomes an :mod:`amm.errors` exception. It decides by HTTP status first
(litellm reports the same status under different classes per provider: a 403 is an
``APIError`` from OpenAI, a ``PermissionDeniedError`` from Anthropic, a
``BadRequestError`` from Gemini), then by class, then by the message::

    429 + insufficient_quota        -> QuotaExceededError        permanent
    429                             -> RateLimitError            retryable, Retry-After
    timeout                         -> ProviderTimeoutError      retryable
    401 / 403                       -> AuthenticationError       permanent
    400, context too long           -> ContextWindowExceededError
    400                             -> InvalidRequestError       (whatever the text says)
    body is not JSON                -> ProviderError             retryable
    refused before sending          -> InvalidRequestError       "client_error"
    context too long                -> ContextWindowExceededError
    404                             -> ModelNotFoundError
    422, other BadRequestError      -> InvalidRequestError
    503 / ServiceUnavailable        -> ModelUnavailableError     retryable (the seed's reading,
                                                                 ``docs/seed.md``)
    5xx, connection, anything else  -> ProviderError             retryable (other 4xx: not)

"Refused before sending" is a TypeError/ValueError-like error raised in this
process (litellm rejecting a parameter, a custom adapter rejecting input) with no
provider response anywhere in its chain: the request is at fault, not the model,
so it never counts against the model's health.

The exceptions of litellm and the provider SDKs keep what the provider echoed
(keys, prompts) in their args, ``body``, ``response`` and chained causes.
:func:`sanitized_chain` stands in for such a chain with plain
:class:`RedactedProviderError` objects carrying only type names and redacted
text, so a traceback of an amm error prints nothing secret.

Nothing here imports litellm: classes are recognised by name, so this module
costs nothing until an error happens.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from amm.errors import (
    APIModelError,
    AuthenticationError,
    ContextWindowExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)

__all__ = [
    "DEFAULT_SERVERS",
    "RedactedProviderError",
    "is_client_side",
    "map_provider_error",
    "rate_limit_info",
    "retry_after_s",
    "sanitized_chain",
    "scrub_in_place",
    "server_of",
]

DEFAULT_SERVERS: Mapping[str, tuple[str, int]] = {
    "openai": ("api.openai.com", 443),
    "anthropic": ("api.anthropic.com", 443),
    "google": ("generativelanguage.googleapis.com", 443),
    "ollama": ("localhost", 11434),
}
"""Where each provider's API lives when the registry gives no ``api_base``."""

_MAX_MESSAGE = 300
_MALFORMED = re.compile(
    r"Unterminated string|Expecting value|Expecting property name|JSONDecodeError|"
    r"Unable to get json response|Error converting to valid response|Invalid control character",
)
_CONTEXT = re.compile(
    r"maximum context length|context[ _]window|context_length_exceeded|prompt is too long|"
    r"input token count exceeds", re.IGNORECASE,
)
_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def map_provider_error(
    exc: BaseException, *, model_id: str, task_id: str | None, secret: str | None
) -> APIModelError:
    """The :mod:`amm.errors` exception for ``exc``; its text never holds ``secret``.

    ``exc`` itself is scrubbed of ``secret`` too, since the mapped error chains it
    (``raise mapped from exc``) and a traceback prints it.
    """
    _scrub(exc, secret)
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = _status(exc)
    text = _message(exc, secret)
    kw: dict[str, Any] = {"model_id": model_id, "task_id": task_id or None}
    message = f"{model_id}: {text}"

    if "Timeout" in names or "APITimeoutError" in names or "TimeoutException" in names \
            or isinstance(exc, TimeoutError):
        return ProviderTimeoutError(message, error_type="timeout", **kw)
    if status == 429 or "RateLimitError" in names:
        if "insufficient_quota" in text or "insufficient_quota" in _body_text(exc):
            return QuotaExceededError(message, error_type="insufficient_quota", status_code=429,
                                      **kw)
        return RateLimitError(message, retry_after_seconds=retry_after_s(exc),
                              error_type="rate_limited", status_code=429, **kw)
    if status == 401 or "AuthenticationError" in names:
        return AuthenticationError(message, error_type="authentication", status_code=401, **kw)
    if status == 403 or "PermissionDeniedError" in names:
        return AuthenticationError(message, error_type="permission_denied", status_code=403, **kw)
    if status == 400 or (status is None and "BadRequestError" in names):
        # The provider refused this request; whatever the text quotes, the model is fine.
        if "ContextWindowExceededError" in names or _CONTEXT.search(text):
            return ContextWindowExceededError(message, error_type="context_window_exceeded",
                                              status_code=400, **kw)
        return InvalidRequestError(message, error_type="bad_request", status_code=status, **kw)
    if _MALFORMED.search(text) or isinstance(exc, json.JSONDecodeError):
        # A 200 whose body is not JSON: litellm reports it as 500, 422 or a connection error.
        return ProviderError(message, error_type="malformed_response", is_retryable=True,
                             status_code=status, **kw)
    if is_client_side(exc):
        return InvalidRequestError(message, error_type="client_error", **kw)
    if "ContextWindowExceededError" in names or _CONTEXT.search(text):
        return ContextWindowExceededError(message, error_type="context_window_exceeded",
                                          status_code=status or 400, **kw)
    if status == 404 or "NotFoundError" in names:
        return ModelNotFoundError(message, error_type="model_not_found", status_code=404, **kw)
    if status == 422 or "BadRequestError" in names:
        return InvalidRequestError(message, error_type="bad_request", status_code=status, **kw)
    if status == 503 or "ServiceUnavailableError" in names:
        return ModelUnavailableError(message, error_type="503", status_code=503, **kw)
    if status is not None and status >= 500:
        return ProviderError(message, error_type=str(status), status_code=status, **kw)
    if "APIConnectionError" in names or "ConnectError" in names or isinstance(exc, ConnectionError):
        return ProviderError(message, error_type="connection_error", status_code=status, **kw)
    # Anything else: a provider-side failure of an unknown kind. Other 4xx will not
    # get better by retrying; the rest might.
    retryable = status is None or status >= 500
    return ProviderError(message, error_type=str(status) if status else type(exc).__name__,
                         is_retryable=retryable, status_code=status, **kw)


# Raised by our own process when it cannot build or send a request from its input.
_CLIENT_SIDE = (TypeError, ValueError, KeyError, AttributeError, IndexError,
                NotImplementedError, AssertionError)
_NOT_CLIENT_SIDE = (json.JSONDecodeError, UnicodeDecodeError)  # a reply that did not parse
_MAX_CHAIN = 8
_MAX_CAUSE_TEXT = 2000


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts, oldest last, cycle-safe and bounded."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < _MAX_CHAIN and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _has_response(exc: BaseException) -> bool:
    try:
        return getattr(exc, "response", None) is not None
    except Exception:  # a placeholder response that raises on access: still a response
        return True


def is_client_side(exc: BaseException) -> bool:
    """Did our own process refuse to send the request (a TypeError/ValueError-like
    error in the chain and no provider response in it)? Such a failure is the
    request's, never the model's."""
    chain = _chain(exc)
    if any(_has_response(e) for e in chain):
        return False
    return any(isinstance(e, _CLIENT_SIDE) and not isinstance(e, _NOT_CLIENT_SIDE)
               for e in chain)


class RedactedProviderError(Exception):
    """Stands in an amm error's ``__cause__`` chain for an exception of litellm, a
    provider SDK or an adapter: the original's type name and its redacted text.

    The originals keep whatever the provider echoed (keys, prompts) in their args,
    ``body`` and ``response``; these carry nothing else.
    """

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(f"{type_name}: {text}" if text else type_name)
        self.type_name = type_name


def sanitized_chain(exc: BaseException | None, redact: Callable[[str], str]
                    ) -> RedactedProviderError | None:
    """A chain of :class:`RedactedProviderError` standing in for ``exc`` and its causes."""
    if exc is None:
        return None
    head: RedactedProviderError | None = None
    tail: RedactedProviderError | None = None
    for original in _chain(exc):
        cls = type(original)
        try:
            text = str(original)
        except Exception:
            text = ""
        link = RedactedProviderError(f"{cls.__module__}.{cls.__qualname__}",
                                     redact(text[:_MAX_CAUSE_TEXT]))
        link.__suppress_context__ = True
        if tail is None:
            head = link
        else:
            tail.__cause__ = link
        tail = link
    return head


def scrub_in_place(exc: BaseException, redact: Callable[[str], str]) -> None:
    """Redact ``exc``'s own texts (args, string attributes) and replace its causes by
    :func:`sanitized_chain`: for an exception that stays in a chain amm raises."""
    with contextlib.suppress(Exception):
        exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    for name, value in list(getattr(exc, "__dict__", {}).items()):
        if isinstance(value, str):
            with contextlib.suppress(Exception):
                setattr(exc, name, redact(value))
        elif name in ("body", "response", "request", "litellm_response_headers"):
            with contextlib.suppress(Exception):  # a provider's echo: nothing we need
                setattr(exc, name, None)
    cause = exc.__cause__ or exc.__context__
    exc.__cause__ = sanitized_chain(cause, redact)
    exc.__context__ = None


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 100 <= status <= 599 else None


def _message(exc: BaseException, secret: str | None) -> str:
    text = _PREFIX.sub("", str(exc)).strip()
    text = text.splitlines()[0] if text else type(exc).__name__  # litellm may append a traceback
    if secret:
        text = text.replace(secret, "***")
    return text[:_MAX_MESSAGE]


def _body_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    return json.dumps(body, default=str) if body is not None else ""


def _scrub(exc: BaseException, secret: str | None) -> None:
    if not secret:
        return
    exc.args = tuple(a.replace(secret, "***") if isinstance(a, str) else a for a in exc.args)
    for attr in ("message", "detail", "litellm_debug_info"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and secret in value:
            with contextlib.suppress(AttributeError):  # a read-only property: nothing to scrub
                setattr(exc, attr, value.replace(secret, "***"))


def _headers(exc: BaseException) -> list[Mapping[str, str]]:
    found: list[Mapping[str, str]] = []
    response = getattr(exc, "response", None)
    try:
        headers = getattr(response, "headers", None)
    except Exception:  # litellm's placeholder responses raise on access
        headers = None
    if headers:
        found.append(headers)
    extra = getattr(exc, "litellm_response_headers", None)
    if extra:
        found.append(extra)
    return found


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait (``retry-after-ms`` / ``Retry-After``), or None."""
    for headers in _headers(exc):
        millis = _get(headers, "retry-after-ms")
        if millis is not None:
            try:
                return max(0.0, float(millis) / 1000.0)
            except ValueError:
                pass
        value = _get(headers, "retry-after")
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return None


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(f"llm_provider-{name}")
    return value


def rate_limit_info(headers: Mapping[str, Any]) -> dict[str, float]:
    """Remaining requests/tokens and seconds to reset from ``x-ratelimit-*`` or
    ``anthropic-ratelimit-*`` response headers; empty when the provider sent none."""
    info: dict[str, float] = {}
    for key, kind, what in (("remaining_requests", "remaining", "requests"),
                            ("remaining_tokens", "remaining", "tokens"),
                            ("reset_requests_s", "reset", "requests"),
                            ("reset_tokens_s", "reset", "tokens")):
        raw = _get(headers, f"x-ratelimit-{kind}-{what}")
        anthropic = _get(headers, f"anthropic-ratelimit-{what}-{kind}")
        value = _parse_limit(raw, kind) if raw is not None else None
        if value is None and anthropic is not None:
            value = _parse_limit(anthropic, kind)
        if value is not None:
            # Remaining counts are whole requests/tokens; resets are seconds.
            info[key] = max(0, int(value)) if kind == "remaining" else value
    return info


def _parse_limit(value: str, kind: str) -> float | None:
    value = str(value).strip()
    try:
        return float(value)
    except ValueError:
        pass
    if kind != "reset":
        return None
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:  # "1m0s", "59.7s", "6ms"
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        return sum(float(n) * scale[u] for n, u in parts)
    try:  # Anthropic: an RFC 3339 instant
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - time.time())


def server_of(provider: str, api_base: str | None) -> tuple[str | None, int | None]:
    """(host, port) a request goes to: from ``api_base``, else the provider's default."""
    if api_base:
        parts = urlsplit(api_base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname, port
    return DEFAULT_SERVERS.get(provider, (None, None))
