"""The online server (`-e serve`, `agnews-serve`): MLflow's scoring protocol over the project's Classifier, with
dynamic batching, a bounded queue, /health and Prometheus /metrics.

- `POST /invocations`: `{"inputs": [...]}`, `{"instances": [...]}` (texts, or records of the model's text columns)
  or `{"dataframe_split": {"columns": [...], "data": [...]}}` (the model's text columns as predict reads them);
  texts are cleaned as predict cleans them. Answers `{"predictions": [{"label", "class_id", "score",
  "probabilities"}, ...]}`, one per row, in request order.
- Requests wait in a bounded asyncio queue; one worker takes up to `max_batch` rows (whole requests) or what came
  within `max_wait_ms` of the first, sorts them by length, scores them in ONE classifier call in a thread (the event
  loop stays free) and hands each request its rows back. A full queue answers 503 with Retry-After.
- Faults answer one line: malformed JSON, an unknown shape, missing columns (naming the model's), a row that is not
  a string or is empty (naming the row) -> 400; a body over `max_body_bytes` -> 413.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from agnews import metrics
from agnews.data import reading
from agnews.data.task import AG_NEWS, Task
from agnews.errors import PipelineError

log = logging.getLogger(__name__)

SHAPES = ("inputs", "instances", "dataframe_split")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RETRY_AFTER_S = 1
GRACEFUL_SHUTDOWN_S = 30  # uvicorn waits this long for in-flight requests after SIGTERM


class RequestError(Exception):
    """A request the server refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


# --- metrics ------------------------------------------------------------------------------------------------

@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self):
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:.6g}",
                f"{name}_count {self.count}"]
        return out


@dataclass
class Metrics:
    """What /metrics reports, written in Prometheus' text format by hand (no client library needed)."""

    requests: dict[int, int] = field(default_factory=dict)  # by HTTP status
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by kind
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def answered(self, status: int, seconds: float, rows: int = 0) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        self.rows += rows
        self.latency.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def text(self, queue_depth: int) -> str:
        lines = ["# HELP agnews_serve_requests_total Requests to /invocations, by HTTP status.",
                 "# TYPE agnews_serve_requests_total counter"]
        lines += [f'agnews_serve_requests_total{{code="{code}"}} {n}' for code, n in sorted(self.requests.items())]
        lines += ["# HELP agnews_serve_rows_total Rows scored.", "# TYPE agnews_serve_rows_total counter",
                  f"agnews_serve_rows_total {self.rows}",
                  "# HELP agnews_serve_errors_total Refused or failed requests, by kind.",
                  "# TYPE agnews_serve_errors_total counter"]
        lines += [f'agnews_serve_errors_total{{kind="{kind}"}} {n}' for kind, n in sorted(self.errors.items())]
        lines += ["# HELP agnews_serve_batch_rows Rows per classifier call.",
                  "# TYPE agnews_serve_batch_rows histogram",
                  *self.batch_rows.lines("agnews_serve_batch_rows"),
                  "# HELP agnews_serve_latency_seconds Time from request to answer.",
                  "# TYPE agnews_serve_latency_seconds histogram",
                  *self.latency.lines("agnews_serve_latency_seconds"),
                  "# HELP agnews_serve_queue_depth Requests waiting for the batcher.",
                  "# TYPE agnews_serve_queue_depth gauge", f"agnews_serve_queue_depth {queue_depth}"]
        return "\n".join(lines) + "\n"


# --- batching -----------------------------------------------------------------------------------------------

@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class Batcher:
    """Requests in a bounded queue; one worker scores up to `max_batch` rows (or what came within `max_wait_ms` of
    the first) in one classifier call, in a thread, sorted by length, and answers each request with its rows."""

    def __init__(self, classifier: Callable[[], Any], max_batch: int, max_wait_ms: float, max_queue: int,
                 stats: Metrics):
        self._classifier = classifier
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.max_queue, self.stats = max_queue, stats
        self.queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()  # one classifier call at a time, whichever loop asks

    def start(self) -> None:
        """The queue and worker in the running loop (at startup, or lazily at the first request)."""
        if self._worker is None or self._worker.done():
            self.queue = asyncio.Queue(maxsize=self.max_queue)
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def score(self, texts: list[str]) -> np.ndarray:
        """Probabilities for these texts (request order), once the worker has scored them with others."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Pending(texts, future))
        except asyncio.QueueFull:
            raise RequestError(503, f"the server is busy ({self.max_queue} requests queued); retry shortly",
                               {"Retry-After": str(RETRY_AFTER_S)}) from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            rows = len(batch[0].texts)
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                remaining = deadline - loop.time()
                try:
                    item = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(
                        self.queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                batch.append(item)
                rows += len(item.texts)
            batch = [p for p in batch if not p.future.done()]  # a client that went away is not scored
            if batch:
                await self._score(batch)

    async def _score(self, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
        try:
            logits = await asyncio.to_thread(self._logits, [texts[i] for i in order])
            probabilities = np.empty_like(logits)
            probabilities[order] = metrics.probabilities(np.asarray(logits, dtype=np.float64))
        except Exception as exc:  # noqa: BLE001  (every waiting request hears it; the worker keeps serving)
            log.exception("scoring a batch of %d rows failed", len(texts))
            self.stats.error("scoring")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RequestError(500, f"scoring failed: {exc}".splitlines()[0]))
            return
        self.stats.batch_rows.observe(len(texts))
        start = 0
        for pending in batch:
            end = start + len(pending.texts)
            if not pending.future.done():
                pending.future.set_result(probabilities[start:end])
            start = end

    def _logits(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._classifier().logits(texts))


# --- the protocol -------------------------------------------------------------------------------------------

def _columns_hint(task: Task) -> str:
    return (f"the model's text columns are {', '.join(task.text_columns)} (or one 'text' column, or title and "
            "description)")


def parse_texts(payload: object, task: Task = AG_NEWS) -> list[str]:
    """The cleaned texts of a scoring request (MLflow's protocol), or a RequestError(400) with a one-line reason."""
    if not isinstance(payload, dict) or len([k for k in SHAPES if k in payload]) != 1:
        raise RequestError(400, f"expected a JSON object with exactly one of {', '.join(SHAPES)}")
    shape = next(k for k in SHAPES if k in payload)
    value = payload[shape]
    if shape == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise RequestError(400, 'dataframe_split must be {"columns": [...], "data": [[...], ...]}')
        columns = value.get("columns")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError(400, f"dataframe_split needs its column names; {_columns_hint(task)}")
        bad = [i for i, row in enumerate(value["data"]) if not isinstance(row, list) or len(row) != len(columns)]
        if bad:
            bad = bad[0]
            raise RequestError(400, f"dataframe_split row {bad + 1} does not have {len(columns)} values "
                                    f"({', '.join(columns)})")
        return _from_frame(pd.DataFrame(value["data"], columns=columns, dtype=object), task)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError(400, f"{shape} must be a non-empty list of texts")
    if all(isinstance(v, dict) for v in value):  # records of the model's columns
        return _from_frame(pd.DataFrame.from_records(value), task)
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise RequestError(400, f"{shape} row {i + 1} is not a string ({type(text).__name__}); send texts")
    return _cleaned(pd.Series(value, dtype=object), task)


def _from_frame(frame: pd.DataFrame, task: Task) -> list[str]:
    """The model's text columns first, else `text`, else title+description, as predict reads a file."""
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    columns = tuple(c.lower() for c in task.text_columns)
    try:
        reading.refuse_duplicate_columns(frame.columns, "the request", "(names are matched ignoring case and spaces)")
        for wanted in (columns, ("text",), ("title", "description")):
            if set(wanted) <= set(frame.columns):
                text = reading._joined(frame, wanted, "the request")
                break
        else:
            raise RequestError(400, f"the request has columns {', '.join(map(str, frame.columns)) or '(none)'}; "
                                    f"{_columns_hint(task)}")
    except PipelineError as exc:
        raise RequestError(400, str(exc).splitlines()[0]) from None
    if frame.empty:
        raise RequestError(400, "the request has no rows")
    return _cleaned(text, task)


def _cleaned(text: pd.Series, task: Task) -> list[str]:
    cleaned = reading.clean_texts(text.reset_index(drop=True), task.cleaning)
    empty = np.flatnonzero((cleaned.str.len() == 0).to_numpy())
    if len(empty):
        raise RequestError(400, f"row {empty[0] + 1} has empty text; fill it or drop the row")
    return cleaned.tolist()


def predictions(probabilities: np.ndarray, labels: tuple[str, ...]) -> list[dict]:
    out = []
    for row in probabilities:
        best = int(row.argmax())
        out.append({"label": labels[best], "class_id": best, "score": float(row[best]),
                    "probabilities": {name: float(p) for name, p in zip(labels, row)}})
    return out


# --- the app ------------------------------------------------------------------------------------------------

def create_app(classifier_factory: Callable[[], Any], max_batch: int = 32, max_wait_ms: float = 5,
               max_queue: int = 256, max_body_bytes: int = 1 << 20, task: Task = AG_NEWS,
               info: dict | None = None):
    """The ASGI app. `classifier_factory()` returns the loaded classifier (called once, at startup or the first
    request); `task` says how request columns become texts; `info` (model_uri, version) is shown by /health."""
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def classifier():
        with lock:
            if "classifier" not in state:
                state["classifier"] = classifier_factory()
            return state["classifier"]

    stats = Metrics()
    batcher = Batcher(classifier, max_batch, max_wait_ms, max_queue, stats)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await asyncio.to_thread(classifier)
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="agnews-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.metrics = batcher, stats

    def refuse(error: RequestError, started: float) -> Response:
        stats.error({400: "bad_request", 413: "too_large", 503: "queue_full"}.get(error.status, "failed"))
        stats.answered(error.status, time.perf_counter() - started)
        return JSONResponse({"error_code": "BAD_REQUEST" if error.status == 400 else str(error.status),
                             "message": error.reason}, error.status, headers=error.headers)

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise RequestError(413, f"the body has {declared} bytes; the limit is {max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise RequestError(413, f"the body is over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        try:
            raw = await body(request)
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(400, f"malformed JSON: {exc}".splitlines()[0]) from None
            texts = parse_texts(payload, task)
            probabilities = await batcher.score(texts)
        except RequestError as error:
            return refuse(error, started)
        stats.answered(200, time.perf_counter() - started, len(texts))
        return JSONResponse({"predictions": predictions(probabilities, tuple(classifier().labels))})

    @app.get("/ping")
    async def ping() -> Response:
        return PlainTextResponse("\n")

    @app.get("/health")
    async def health() -> dict:
        model = await asyncio.to_thread(classifier)
        return {"status": "ok", **(info or {}), "variant": getattr(model, "variant", ""),
                "precision": getattr(model, "precision", ""), "labels": list(model.labels),
                "rows_served": stats.rows, "requests_served": stats.requests.get(200, 0),
                "queue_depth": batcher.depth(), "max_batch": max_batch, "max_wait_ms": max_wait_ms}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(stats.text(batcher.depth()), media_type="text/plain; version=0.0.4")

    return app


def run(app, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    """uvicorn on host:port until SIGTERM or SIGINT. SIGTERM: stop accepting, drain the requests in flight (at most
    GRACEFUL_SHUTDOWN_S), then return, so the process exits 0 (uvicorn re-raises the signal it caught once it has
    shut down; a handler that only logs takes it instead of the default one, which would end the process with -15)."""
    import uvicorn

    signal.signal(signal.SIGTERM, lambda number, frame: log.info("SIGTERM: in-flight requests drained; exiting"))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
