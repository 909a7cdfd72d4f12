"""How SQL reaches ClickHouse: a server over HTTP (clickhouse-connect) or chdb in-process.

A :class:`Runner` is two methods, ``frame`` (a query's result as a DataFrame) and
``command`` (DDL and inserts); the source and the export tool hold one and know
nothing else of the client. Errors of the clients are converted once, here, into
:class:`ClickHouseError`; a missing client library is :class:`MissingExtraError`
naming the extra to install.

    runner = open_runner("chdb:///tmp/traces")          # embedded, a directory
    runner = open_runner("clickhouse://default@localhost:8123/otel")
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

__all__ = ["ChdbRunner", "ClickHouseError", "HttpRunner", "MissingExtraError", "Runner",
           "SourceURL", "open_runner", "parse_url"]

EXTRA = "amm-sdk[clickhouse]"

# Exact float text parsing (the fast parser may be one ulp off: sums would then differ
# from SQLite's) and UTC for toDate/toString whatever the host's zone.
SETTINGS = {"precise_float_parsing": 1, "session_timezone": "UTC"}


class ClickHouseError(RuntimeError):
    """A query failed in ClickHouse (the message is ClickHouse's)."""


class MissingExtraError(ImportError):
    """The client library of a source URL is not installed (says which extra is)."""


class Runner(Protocol):
    """Runs SQL on one ClickHouse database."""

    def frame(self, sql: str, settings: Mapping[str, int] | None = None) -> pd.DataFrame:
        """The result of a SELECT as a DataFrame (``settings``: this query's own, on top
        of :data:`SETTINGS`)."""
        ...

    def command(self, sql: str, data: str | None = None) -> None:
        """A statement without a result (``data``: the body of an INSERT ... FORMAT)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceURL:
    """A parsed ``clickhouse://`` or ``chdb://`` URL."""

    scheme: str
    database: str
    table: str
    path: str = ""
    host: str = "localhost"
    port: int = 8123
    user: str = "default"
    password: str = ""
    secure: bool = False


def parse_url(url: str) -> SourceURL:
    """``clickhouse[s]://user:pw@host:8123/db?table=otel_traces`` or ``chdb:///dir?db=otel``.

    Database ``otel`` and table ``otel_traces`` by default (the exporter's defaults)."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    table = query.get("table", "otel_traces")
    if parts.scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"{url}: chdb:// needs a directory, e.g. chdb:///var/lib/traces")
        return SourceURL("chdb", query.get("db", "otel"), table, path=path)
    if parts.scheme in ("clickhouse", "clickhouses"):
        secure = parts.scheme == "clickhouses" or query.get("secure") in ("1", "true")
        return SourceURL(
            "clickhouse", parts.path.strip("/") or query.get("db", "otel"), table,
            host=parts.hostname or "localhost", port=parts.port or (8443 if secure else 8123),
            user=unquote(parts.username or "default"), password=unquote(parts.password or ""),
            secure=secure)
    raise ValueError(f"{url}: expected clickhouse://host:8123/db or chdb:///path")


def _require(module: str, url: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{url}: needs {module.replace('_', '-')}; install it with "
            f"pip install '{EXTRA}'") from exc


class HttpRunner:
    """A ClickHouse server through clickhouse-connect (HTTP, port 8123 by default)."""

    __slots__ = ("_client", "url")

    def __init__(self, url: SourceURL, client: Any) -> None:
        self.url = url
        self._client = client

    def __repr__(self) -> str:
        return f"HttpRunner({self.url.host}:{self.url.port}/{self.url.database})"

    def frame(self, sql: str, settings: Mapping[str, int] | None = None) -> pd.DataFrame:
        try:
            return self._client.query_df(sql, settings={**SETTINGS, **(settings or {})})
        except Exception as exc:  # the client's own error types; converted once, here
            raise ClickHouseError(str(exc)) from exc

    def command(self, sql: str, data: str | None = None) -> None:
        try:
            if data is None:
                self._client.command(sql, settings=SETTINGS)
            else:
                self._client.raw_insert(sql, insert_block=data.encode(), settings=SETTINGS)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc


class ChdbRunner:
    """ClickHouse embedded in this process (chdb), its data in a directory."""

    __slots__ = ("_session", "url")

    def __init__(self, url: SourceURL, session: Any) -> None:
        self.url = url
        self._session = session

    def __repr__(self) -> str:
        return f"ChdbRunner({self.url.path!r})"

    def _settings(self, extra: Mapping[str, int] | None) -> str:
        merged = {**SETTINGS, **(extra or {})}
        return " SETTINGS " + ", ".join(f"{k} = {v!r}" for k, v in merged.items())

    def frame(self, sql: str, settings: Mapping[str, int] | None = None) -> pd.DataFrame:
        try:
            out = self._session.query(sql + self._settings(settings), "Parquet")
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        if not out.bytes():
            return pd.DataFrame()
        return pd.read_parquet(io.BytesIO(out.bytes()))

    def command(self, sql: str, data: str | None = None) -> None:
        try:
            self._session.query(sql if data is None else f"{sql}\n{data}")
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def close(self) -> None:
        """Release the embedded engine's directory."""
        self._session.close()


_SESSIONS: dict[str, Any] = {}  # chdb allows one session per process: shared by path


def open_runner(url: str) -> HttpRunner | ChdbRunner:
    """A runner for a ``clickhouse://`` or ``chdb://`` URL (see :func:`parse_url`)."""
    parsed = parse_url(url)
    if parsed.scheme == "chdb":
        session_mod = _require("chdb.session", url)
        session = _SESSIONS.get(parsed.path)
        if session is None:
            for other in list(_SESSIONS):  # one embedded engine at a time
                _SESSIONS.pop(other).close()
            session = _SESSIONS[parsed.path] = session_mod.Session(parsed.path)
        session.query(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`")
        return ChdbRunner(parsed, session)
    cc = _require("clickhouse_connect", url)
    try:
        client = cc.get_client(host=parsed.host, port=parsed.port, username=parsed.user,
                               password=parsed.password, database=parsed.database,
                               secure=parsed.secure)
    except Exception as exc:
        raise ClickHouseError(f"{parsed.host}:{parsed.port}: {exc}") from exc
    return HttpRunner(parsed, client)
