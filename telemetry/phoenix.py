"""Quality scores as Arize Phoenix span annotations, posted off the request path.

Phoenix shows the ``gen_ai.evaluation.result`` events of a span in its detail view,
but it filters, sorts and charts only *annotations*. With
``AMM_PHOENIX_ANNOTATIONS=http://127.0.0.1:6006`` (or ``Recorder(annotator=...)``)
the recorder hands each evaluated, sampled ``chat`` span to a
:class:`PhoenixAnnotator`, which posts it to Phoenix's REST API,
``POST {url}/v1/span_annotations``: four annotations per span, named as the
evaluation events (``overall``, ``completeness``, ``relevance``, ``coherence``),
the ``overall`` one with the pass/fail label and the explanation; annotator kind
``CODE``, identifier ``amm`` (a second post of the same span updates, never
duplicates, and a person's own annotations of that name are left alone).

Off the request path: :meth:`PhoenixAnnotator.annotate` only appends to a bounded
queue (a full queue drops and counts). A daemon thread, started on the first
annotation, posts what is queued every ``interval_s`` in batches; before each post
it flushes the tracer provider (``flush_spans``), so the spans are exported before
their annotations. Phoenix takes annotations asynchronously and holds those whose
span has not arrived yet (retrying for about ten minutes), so an export that is a
little late loses nothing. A post that fails is logged once (then at debug level),
counted in ``failed`` and dropped, and ends that round (the rest waits for the next):
telemetry never fails a call. The queue is posted once more at
:meth:`PhoenixAnnotator.shutdown`, which also runs at interpreter exit; if Phoenix is
away then, what is left is counted in ``failed`` and let go.
``PHOENIX_API_KEY``, when set, is sent as a bearer token (Phoenix with auth on).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from telemetry import conventions as c
from telemetry.events import QualityEvent

__all__ = [
    "ANNOTATION_IDENTIFIER",
    "PhoenixAnnotator",
    "SpanAnnotator",
    "annotations_payload",
    "annotator_from_env",
]

_log = logging.getLogger("amm.telemetry")

ANNOTATION_IDENTIFIER = "amm"
"""Identifier of amm's annotations: Phoenix upserts on (span, name, identifier)."""
_ENV_API_KEY = "PHOENIX_API_KEY"


class SpanAnnotator(Protocol):
    """Receives the quality of one exported span. Must not raise or block."""

    def annotate(self, span_id: str, quality: QualityEvent, label: str | None) -> None: ...


def annotations_payload(span_id: str, quality: QualityEvent, label: str | None
                        ) -> list[dict[str, Any]]:
    """The ``data`` items of ``POST /v1/span_annotations`` for one evaluated span.

    >>> [a["name"] for a in annotations_payload("00f067aa0ba902b7", quality, "pass")]
    ['overall', 'completeness', 'relevance', 'coherence']
    """
    scores = dict(zip(c.EVAL_NAMES, (quality.overall, quality.completeness,
                                     quality.relevance, quality.coherence), strict=True))
    metadata = {c.AMM_MODEL_ID: quality.model_id, c.AMM_AGENT_TYPE: quality.agent_type,
                c.AMM_TASK_ID: quality.task_id}
    items = []
    for name, score in scores.items():
        result: dict[str, Any] = {"score": float(score)}
        if name == "overall":
            if label is not None:
                result["label"] = label
            if quality.explanation:
                result["explanation"] = quality.explanation
        items.append({"span_id": span_id, "name": name, "annotator_kind": "CODE",
                      "identifier": ANNOTATION_IDENTIFIER, "result": result,
                      "metadata": metadata})
    return items


class PhoenixAnnotator:
    """Posts span annotations to Phoenix in batches, from its own thread.

    >>> annotator = PhoenixAnnotator("http://127.0.0.1:6006")
    >>> annotator.annotate("00f067aa0ba902b7", quality_event, "pass")  # queued, returns at once
    >>> annotator.shutdown()  # posts what is left
    """

    __slots__ = ("_api_key", "_batch_spans", "_flush_spans", "_interval_s", "_lock",
                 "_max_queue", "_post_lock", "_queue", "_stopped", "_thread", "_timeout_s",
                 "_wake", "_warned", "dropped", "endpoint", "failed", "posted", "url")

    def __init__(self, url: str, *, interval_s: float = 1.0, max_queue: int = 10_000,
                 batch_spans: int = 250, timeout_s: float = 5.0,
                 flush_spans: Callable[[], object] | None = None,
                 api_key: str | None = None) -> None:
        """``url``: Phoenix's base URL (its web port). ``flush_spans``: called before each
        post so the spans are exported first (the tracer provider's ``force_flush``).
        ``api_key``: explicit > ``PHOENIX_API_KEY`` > none."""
        self.url = url.rstrip("/")
        self.endpoint = self.url + "/v1/span_annotations"
        self._interval_s = interval_s
        self._max_queue = max_queue
        self._batch_spans = batch_spans
        self._timeout_s = timeout_s
        self._flush_spans = flush_spans
        self._api_key = api_key if api_key is not None else os.environ.get(_ENV_API_KEY) or None
        self._queue: deque[tuple[str, QualityEvent, str | None]] = deque()
        self._lock = threading.Lock()  # the thread's start and stop
        self._post_lock = threading.Lock()  # one post at a time, in queue order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._warned = False
        self.posted = 0
        """Spans whose annotations Phoenix took."""
        self.dropped = 0
        """Spans not queued because the queue was full (or the annotator stopped)."""
        self.failed = 0
        """Spans whose post failed (Phoenix down, refused, timed out)."""

    def __repr__(self) -> str:
        return (f"PhoenixAnnotator(url={self.url!r}, queued={len(self._queue)}, "
                f"posted={self.posted}, dropped={self.dropped}, failed={self.failed})")

    def annotate(self, span_id: str, quality: QualityEvent, label: str | None) -> None:
        """Queue the quality of span ``span_id`` (16 hex digits); never blocks or raises."""
        if self._stopped or len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append((span_id, quality, label))
        if self._thread is None:
            self._start()

    def flush(self) -> bool:
        """Post everything queued now (in this thread); True when every post succeeded.

        The first failed post ends the flush: the rest stays queued for the next one,
        so a Phoenix that hangs costs one timeout per flush, not one per batch."""
        with self._post_lock:
            while self._queue:
                batch = [self._queue.popleft()
                         for _ in range(min(self._batch_spans, len(self._queue)))]
                if not self._post(batch):
                    return False
        return True

    def shutdown(self) -> None:
        """Stop the thread and post what is left. Idempotent; also runs at exit."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=self._timeout_s + 5.0)
        if not self.flush():  # Phoenix is away: what is left is not annotated
            with self._post_lock:
                self.failed += len(self._queue)
                self._queue.clear()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name="amm-phoenix-annotations",
                                            daemon=True)
            self._thread.start()
        atexit.register(self.shutdown)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._queue:
                self.flush()

    def _post(self, batch: list[tuple[str, QualityEvent, str | None]]) -> bool:
        if self._flush_spans is not None:
            try:
                self._flush_spans()
            except Exception:  # a broken exporter must not stop the annotations
                _log.debug("flushing spans before annotating failed", exc_info=True)
        data = [item for span_id, quality, label in batch
                for item in annotations_payload(span_id, quality, label)]
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps({"data": data}).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except (OSError, ValueError) as exc:  # HTTPError and URLError are OSErrors
            self.failed += len(batch)
            detail = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else repr(exc)
            if not self._warned:
                self._warned = True
                _log.warning("Phoenix annotations: POST %s failed (%s); is Phoenix running "
                             "there? %d span(s) not annotated (further failures are logged "
                             "at debug level)", self.endpoint, detail, len(batch))
            else:
                _log.debug("Phoenix annotations: POST %s failed (%s)", self.endpoint, detail)
            return False
        self.posted += len(batch)
        return True


def annotator_from_env(flush_spans: Callable[[], object] | None = None
                       ) -> PhoenixAnnotator | None:
    """A :class:`PhoenixAnnotator` on ``AMM_PHOENIX_ANNOTATIONS`` (Phoenix's URL), or None
    when it is unset, empty or ``false``."""
    raw = os.environ.get(c.ENV_PHOENIX_ANNOTATIONS, "").strip()
    if not raw or raw.lower() in ("false", "0", "no", "off", "none"):
        return None
    if not raw.startswith(("http://", "https://")):
        _log.warning("%s=%r is not an http(s) URL; no Phoenix annotations",
                     c.ENV_PHOENIX_ANNOTATIONS, raw)
        return None
    return PhoenixAnnotator(raw, flush_spans=flush_spans)
