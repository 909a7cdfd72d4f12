"""API keys per provider: loading, round-robin rotation, cool-down, and redaction.

Keys come from the environment (``OPENAI_API_KEY``, ``OPENAI_API_KEY_2``, ...) and
a ``.env`` file, or from :meth:`APIKeyManager.add_key`. A provider may have several
keys; :meth:`~APIKeyManager.get_key` rotates over the healthy ones. The client
reports what the provider said about a key: a 401/403 disables it for good, a 429
cools it down for a while, so rotation moves away from it.

A key is a secret: it never appears in this object's repr, in a log line or in an
error text; :meth:`~APIKeyManager.redact` scrubs it from any text before that text
leaves amm.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from amm.errors import ConfigurationError, InvalidRequestError

__all__ = ["DEFAULT_COOLDOWN_S", "DEFAULT_ENV_FILE", "ENV_KEYS", "APIKeyManager", "parse_env_file"]

logger = logging.getLogger(__name__)

DEFAULT_ENV_FILE = Path(".env")
"""The file :meth:`APIKeyManager.load_keys` reads when present (relative to the CWD)."""

DEFAULT_COOLDOWN_S = 60.0
"""How long a 429'd key rests when the provider gave no ``Retry-After``."""

ENV_KEYS: Mapping[str, str] = {
    "OPENAI_API_KEY": "openai",
    "ANTHROPIC_API_KEY": "anthropic",
    "GOOGLE_API_KEY": "google",
    "GEMINI_API_KEY": "google",
}
"""Environment variable -> provider. Numbered extras (``OPENAI_API_KEY_2``...) add keys."""

_ALIASES = {"gemini": "google"}
_ENV_NAME = re.compile(r"^(" + "|".join(ENV_KEYS) + r")(?:_(\d+))?$")
# Anything shaped like an OpenAI/Anthropic secret, even one we were never told about.
_SECRET_SHAPE = re.compile(r"sk-[A-Za-z0-9_\-]{17,}")
_REDACTED = "***"


@dataclass(slots=True)
class _Key:
    value: str
    label: str  # what logs say instead of the key: "openai key #2"
    disabled: bool = False
    cooling_until: float = 0.0


class APIKeyManager:
    """Holds every provider's keys and hands them out in rotation.

    >>> keys = APIKeyManager()
    >>> keys.add_key("openai", "sk-...")
    >>> keys.get_key("openai")
    """

    __slots__ = ("_base_urls", "_clock", "_cooldown_s", "_keys", "_lock", "_next", "_secrets")

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, cooldown_s: float = DEFAULT_COOLDOWN_S
    ) -> None:
        """``clock`` (monotonic seconds) times cool-downs; ``cooldown_s`` is the rest after a
        429 that came without ``Retry-After``."""
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._lock = threading.Lock()
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
            self._secrets = tuple(sorted({*self._secrets, key}, key=len, reverse=True))

    # -- use ------------------------------------------------------------------------------

    def get_key(self, provider: str) -> str | None:
        """The next healthy key of ``provider`` in rotation.

        Keys cooling down after a 429 are skipped; when every key is cooling, the one
        that recovers first is returned (the provider decides). None when the provider
        has no key, or every key was rejected with 401/403.
        """
        provider = self._provider(provider)
        with self._lock:
            keys = self._keys.get(provider)
            if not keys:
                return None
            now = self._clock()
            start = self._next.get(provider, 0)
            soonest: _Key | None = None
            for i in range(len(keys)):
                index = (start + i) % len(keys)
                k = keys[index]
                if k.disabled:
                    continue
                if k.cooling_until <= now:
                    self._next[provider] = index + 1
                    return k.value
                if soonest is None or k.cooling_until < soonest.cooling_until:
                    soonest = k
            return soonest.value if soonest is not None else None

    def report_failure(
        self, provider: str, key: str | None, status_code: int | None,
        retry_after_s: float | None = None,
    ) -> None:
        """Tell the manager what the provider said about ``key``: 401/403 disable it,
        429 cools it down for ``retry_after_s`` (else the default cool-down). Other
        statuses say nothing about the key and are ignored."""
        if key is None or status_code not in (401, 403, 429):
            return
        provider = self._provider(provider)
        with self._lock:
            entry = next((k for k in self._keys.get(provider, ()) if k.value == key), None)
            if entry is None:
                return
            if status_code == 429:
                rest = retry_after_s if retry_after_s is not None and retry_after_s > 0 \
                    else self._cooldown_s
                entry.cooling_until = self._clock() + rest
                logger.info("%s rate limited (429); cooling down for %.1fs", entry.label, rest)
            else:
                entry.disabled = True
                logger.warning("%s rejected with %s; disabled", entry.label, status_code)

    def has_key(self, provider: str) -> bool:
        """True when ``provider`` has a key that was not rejected."""
        provider = self._provider(provider)
        with self._lock:
            return any(not k.disabled for k in self._keys.get(provider, ()))

    def providers(self) -> list[str]:
        """Providers with at least one key, sorted."""
        with self._lock:
            return sorted(p for p, keys in self._keys.items() if keys)

    def base_url(self, provider: str) -> str | None:
        """A provider's base URL from the environment (``OLLAMA_BASE_URL``); not a secret."""
        return self._base_urls.get(self._provider(provider))

    def redact(self, text: str) -> str:
        """``text`` with every known key, and anything shaped like ``sk-...``, as ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return _SECRET_SHAPE.sub(_REDACTED, text)

    def __repr__(self) -> str:
        now = self._clock()
        with self._lock:
            parts = []
            for provider in sorted(self._keys):
                keys = self._keys[provider]
                disabled = sum(k.disabled for k in keys)
                cooling = sum(not k.disabled and k.cooling_until > now for k in keys)
                state = f"{len(keys)} key{'s' if len(keys) != 1 else ''}"
                if cooling:
                    state += f", {cooling} cooling"
                if disabled:
                    state += f", {disabled} disabled"
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
