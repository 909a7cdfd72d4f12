"""API keys per provider: loading, round-robin rotation, cool-down, and redaction.

Keys come from the environment (``OPENAI_API_KEY``, ``OPENAI_API_KEY_2``, ...) and
a ``.env`` file, or from :meth:`APIKeyManager.add_key`. A provider may have several
keys; :meth:`~APIKeyManager.get_key` rotates over the healthy ones. The client
reports what the provider said about a key, and the key rests only where it failed:

    403 for model m            (key, m) rests DEFAULT_AUTH_COOLDOWN_S (5 min)
    401 at base URL u          (key, u) rests DEFAULT_AUTH_COOLDOWN_S: every model there
    429 for model m            (key, m) cools Retry-After, else DEFAULT_COOLDOWN_S

so one model's 403 never takes the provider's other models down with it, and a key
rejected once is tried again after its rest (a provider's hiccup, a key rotated
back in). Rotation skips a resting key; a cooling key is used only when every key
is cooling.

A key is a secret: it never appears in this object's repr, in a log line or in an
error text; :meth:`~APIKeyManager.redact` (amm's one redaction step,
:func:`telemetry.redaction.redact`, with the keys known here) scrubs any text before
it leaves amm.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from amm.errors import ConfigurationError, InvalidRequestError
from telemetry.redaction import redact as _redact

__all__ = [
    "DEFAULT_AUTH_COOLDOWN_S",
    "DEFAULT_COOLDOWN_S",
    "DEFAULT_ENV_FILE",
    "ENV_KEYS",
    "APIKeyManager",
    "parse_env_file",
]

logger = logging.getLogger(__name__)

DEFAULT_ENV_FILE = Path(".env")
"""The file :meth:`APIKeyManager.load_keys` reads when present (relative to the CWD)."""

DEFAULT_COOLDOWN_S = 60.0
"""How long a 429'd key rests when the provider gave no ``Retry-After``."""

DEFAULT_AUTH_COOLDOWN_S = 300.0
"""How long a key rejected with 401/403 rests in the rejected scope before it is tried again."""

ENV_KEYS: Mapping[str, str] = {
    "OPENAI_API_KEY": "openai",
    "ANTHROPIC_API_KEY": "anthropic",
    "GOOGLE_API_KEY": "google",
    "GEMINI_API_KEY": "google",
}
"""Environment variable -> provider. Numbered extras (``OPENAI_API_KEY_2``...) add keys."""

_ALIASES = {"gemini": "google"}
_ENV_NAME = re.compile(r"^(" + "|".join(ENV_KEYS) + r")(?:_(\d+))?$")
_ANY = "*"  # the scope of a 429 reported without a model: the whole key


def _model_scope(model_id: str | None) -> str:
    return f"model:{model_id}" if model_id else _ANY


def _base_scope(base_url: str | None) -> str:
    # None and "" are the provider's default endpoint.
    return f"base:{(base_url or '').rstrip('/')}"


@dataclass(slots=True)
class _Key:
    value: str
    label: str  # what logs say instead of the key: "openai key #2"
    # scope -> monotonic time the rest ends; expired entries are pruned on write
    rejected: dict[str, float] = field(default_factory=dict)  # 401/403
    cooling: dict[str, float] = field(default_factory=dict)  # 429

    def rejected_until(self, scopes: tuple[str, ...], now: float) -> float:
        return max((u for s in scopes if (u := self.rejected.get(s, 0.0)) > now), default=0.0)

    def cooling_until(self, scopes: tuple[str, ...], now: float) -> float:
        return max((u for s in scopes if (u := self.cooling.get(s, 0.0)) > now), default=0.0)


class APIKeyManager:
    """Holds every provider's keys and hands them out in rotation.

    >>> keys = APIKeyManager()
    >>> keys.add_key("openai", "sk-...")
    >>> keys.get_key("openai")
    """

    __slots__ = ("_auth_cooldown_s", "_base_urls", "_clock", "_cooldown_s", "_keys", "_lock",
                 "_next", "_secrets", "version")

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        auth_cooldown_s: float = DEFAULT_AUTH_COOLDOWN_S,
    ) -> None:
        """``clock`` (monotonic seconds) times cool-downs; ``cooldown_s`` is the rest after a
        429 that came without ``Retry-After``; ``auth_cooldown_s`` the rest of a key in the
        scope where it was rejected with 401/403."""
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._auth_cooldown_s = auth_cooldown_s
        self._lock = threading.Lock()
        #: Bumped whenever a key is added or rested after a 401/403: a caller that caches
        #: ``has_key`` answers (the selector asks it for every model) re-asks after a change.
        self.version = 0
        self._keys: dict[str, list[_Key]] = {}
        self._next: dict[str, int] = {}
        self._base_urls: dict[str, str] = {}
        self._secrets: tuple[str, ...] = ()  # every key ever known, longest first

    # -- loading --------------------------------------------------------------------------

    def load_keys(self, env_file: Path | str | None = DEFAULT_ENV_FILE) -> None:
        """Load keys from the environment and ``env_file`` (the environment wins).

        The default ``.env`` is read when it exists; another path must exist; None reads
        no file. Calling again adds only keys not yet known.
        """
        file_values: dict[str, str] = {}
        if env_file is not None:
            path = Path(env_file)
            if path.is_file():
                file_values = parse_env_file(path)
            elif path != DEFAULT_ENV_FILE:
                raise ConfigurationError(f"{path}: env file not found", path=str(path))
        merged = {**file_values, **{k: v for k, v in os.environ.items() if v}}
        found: list[tuple[int, str, str]] = []  # (number, base variable, key): _2 after _1
        for name, value in merged.items():
            match = _ENV_NAME.match(name)
            if match:
                found.append((int(match.group(2) or 1), match.group(1), value))
        for _, base_name, value in sorted(found):
            self.add_key(ENV_KEYS[base_name], value)
        base = merged.get("OLLAMA_BASE_URL")
        if base:
            self._base_urls["ollama"] = base.rstrip("/")

    def add_key(self, provider: str, key: str | None) -> None:
        """Add ``key`` for ``provider``. None or empty is skipped (an unset variable);
        a key already known is not added twice."""
        if key is None:
            return
        if not isinstance(key, str):
            raise InvalidRequestError(
                f"an API key must be a string; got {type(key).__name__} for provider {provider!r}",
                error_type="invalid_api_key",
            )
        key = key.strip()
        if not key:
            return
        provider = self._provider(provider)
        with self._lock:
            keys = self._keys.setdefault(provider, [])
            if any(k.value == key for k in keys):
                return
            keys.append(_Key(key, f"{provider} key #{len(keys) + 1}"))
            self.version += 1
            self._secrets = tuple(sorted({*self._secrets, key}, key=len, reverse=True))

    # -- use ------------------------------------------------------------------------------

    def get_key(self, provider: str, model_id: str | None = None,
                base_url: str | None = None) -> str | None:
        """The next usable key of ``provider`` for ``model_id`` at ``base_url``, in rotation.

        Keys resting after a 401/403 in this scope are skipped; keys cooling after a 429
        too, unless every key is cooling: then the one that recovers first is returned
        (the provider decides). None when the provider has no key, or every key is
        resting after a 401/403.
        """
        provider = self._provider(provider)
        scopes = (_ANY, _model_scope(model_id), _base_scope(base_url))
        with self._lock:
            keys = self._keys.get(provider)
            if not keys:
                return None
            now = self._clock()
            start = self._next.get(provider, 0)
            soonest: tuple[float, _Key] | None = None
            for i in range(len(keys)):
                index = (start + i) % len(keys)
                k = keys[index]
                if k.rejected_until(scopes, now):
                    continue
                cooling = k.cooling_until(scopes, now)
                if not cooling:
                    self._next[provider] = index + 1
                    return k.value
                if soonest is None or cooling < soonest[0]:
                    soonest = (cooling, k)
            return soonest[1].value if soonest is not None else None

    def seconds_until_ready(self, provider: str, model_id: str | None = None,
                            base_url: str | None = None) -> float | None:
        """Seconds until :meth:`get_key` has a key that is neither resting nor cooling
        for this scope: 0.0 when one is ready now; None when no key will be (none
        known, or every one resting after a 401/403)."""
        provider = self._provider(provider)
        scopes = (_ANY, _model_scope(model_id), _base_scope(base_url))
        with self._lock:
            now = self._clock()
            waits = [k.cooling_until(scopes, now) for k in self._keys.get(provider, ())
                     if not k.rejected_until(scopes, now)]
        if not waits:
            return None
        return max(0.0, min(waits) - now) if all(waits) else 0.0

    def report_failure(
        self, provider: str, key: str | None, status_code: int | None,
        retry_after_s: float | None = None, *, model_id: str | None = None,
        base_url: str | None = None,
    ) -> None:
        """Tell the manager what the provider said about ``key`` (module docstring):
        a 403 rests it for ``model_id``, a 401 for ``base_url`` (the provider's
        default endpoint when None), a 429 cools it for ``model_id`` (the whole key
        when None) for ``retry_after_s``, else the default cool-down. Other statuses
        say nothing about the key and are ignored."""
        if key is None or status_code not in (401, 403, 429):
            return
        provider = self._provider(provider)
        with self._lock:
            entry = next((k for k in self._keys.get(provider, ()) if k.value == key), None)
            if entry is None:
                return
            self.version += 1
            now = self._clock()
            if status_code == 429:
                rest = retry_after_s if retry_after_s is not None and retry_after_s > 0 \
                    else self._cooldown_s
                scope = _model_scope(model_id)
                entry.cooling = _pruned(entry.cooling, now)
                entry.cooling[scope] = max(entry.cooling.get(scope, 0.0), now + rest)
                logger.info("%s rate limited (429) for %s; cooling down for %.1fs",
                            entry.label, scope, rest)
            else:
                # A 403 is about this model (no access to it); a 401 about the key at
                # this endpoint. Without a model, a 403 can only be read as a 401.
                scope = _model_scope(model_id) if status_code == 403 and model_id \
                    else _base_scope(base_url)
                entry.rejected = _pruned(entry.rejected, now)
                entry.rejected[scope] = now + self._auth_cooldown_s
                logger.warning("%s rejected with %s for %s; resting for %.0fs", entry.label,
                               status_code, scope, self._auth_cooldown_s)

    def now(self) -> float:
        """The manager's clock (rests and cool-downs are measured on it)."""
        return self._clock()

    def has_key(self, provider: str, model_id: str | None = None,
                base_url: str | None = None) -> bool:
        """True when ``provider`` has a key not resting after a 401/403 in this scope."""
        provider = self._provider(provider)
        scopes = (_ANY, _model_scope(model_id), _base_scope(base_url))
        with self._lock:
            now = self._clock()
            return any(not k.rejected_until(scopes, now) for k in self._keys.get(provider, ()))

    def providers(self) -> list[str]:
        """Providers with at least one key, sorted."""
        with self._lock:
            return sorted(p for p, keys in self._keys.items() if keys)

    def base_url(self, provider: str) -> str | None:
        """A provider's base URL from the environment (``OLLAMA_BASE_URL``); not a secret."""
        return self._base_urls.get(self._provider(provider))

    def redact(self, text: str, *, contents: Iterable[str] = ()) -> str:
        """``text`` with every known key, and anything shaped like a key, as ``***``, and
        any quoted run of ``contents`` (request/response texts) as ``[redacted prompt]``:
        :func:`telemetry.redaction.redact` with the keys known here."""
        return _redact(text, secrets=self._secrets, contents=contents)

    def __repr__(self) -> str:
        now = self._clock()
        with self._lock:
            parts = []
            for provider in sorted(self._keys):
                keys = self._keys[provider]
                resting = sum(any(u > now for u in k.rejected.values()) for k in keys)
                cooling = sum(any(u > now for u in k.cooling.values()) for k in keys)
                state = f"{len(keys)} key{'s' if len(keys) != 1 else ''}"
                if cooling:
                    state += f", {cooling} cooling"
                if resting:
                    state += f", {resting} rejected"
                parts.append(f"{provider}: {state}")
        return f"APIKeyManager({'; '.join(parts)})"

    __str__ = __repr__

    @staticmethod
    def _provider(provider: str) -> str:
        if not isinstance(provider, str) or not provider.strip():
            raise InvalidRequestError(f"provider must be a non-empty string; got {provider!r}",
                                      error_type="invalid_provider")
        name = provider.strip().lower()
        return _ALIASES.get(name, name)


def _pruned(rests: dict[str, float], now: float) -> dict[str, float]:
    # Scopes are per model: without pruning, a long-lived process keeps every one.
    return {s: u for s, u in rests.items() if u > now}


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file: ``#`` comments, blank lines, an optional
    ``export``, and single or double quotes around the value are understood."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc}", path=str(path)) from exc
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            continue  # not an assignment; a .env file is not worth failing over
        value = value.strip()
        end = value.find(value[0], 1) if value[:1] in ("'", '"') else -1
        # Quoted: whatever follows the closing quote is a comment; unquoted: " #" starts one.
        value = value[1:end] if end > 0 else value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values
