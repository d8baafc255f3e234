"""The online server (`-e serve`, `agnews-serve`): MLflow's scoring protocol over the project's Classifier, with
dynamic batching, a bounded queue, /health and Prometheus /metrics.

- `POST /invocations`: `{"inputs": [...]}`, `{"instances": [...]}` (texts, or records of the model's text columns)
  or `{"dataframe_split": {"columns": [...], "data": [...]}}` (the model's text columns as predict reads them);
  texts are cleaned as predict cleans them. Answers `{"predictions": [{"label", "class_id", "score",
  "probabilities"}, ...]}`, one per row, in request order.
- Requests wait in a bounded asyncio queue; one worker takes up to `max_batch` rows (whole requests): what is queued,
  and what arrives within `max_wait_ms` of the first while other requests are still being read (a lone request is
  scored at once); it sorts them by length, scores them in ONE classifier call in a thread (the event
  loop stays free) and hands each request its rows back. A full queue answers 503 with Retry-After.
- Faults answer one line: malformed JSON, an unknown shape, missing columns (naming the model's), a row that is not
  a string or is empty (naming the row), an unknown `label` -> 400; a body over `max_body_bytes` -> 413.
- Around it, with no I/O on the request path: the source of each batch's classifier (a fixed one, or
  agnews/serving/follow.py's alias follower) and the observers of each scored batch (agnews/serving/shadow.py,
  agnews/serving/windows.py); records and dataframe_split may carry a `label` per row, monitored, never answered.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from agnews import metrics
from agnews.data import reading
from agnews.data.task import AG_NEWS, Task
from agnews.errors import PipelineError
from agnews.serving.telemetry import Metrics
from agnews.serving.traffic import NO_LABEL, Scored, Served, Static, label_ids

log = logging.getLogger(__name__)

SHAPES = ("inputs", "instances", "dataframe_split")
LABEL = "label"  # an optional column (records, dataframe_split) with each row's true label: monitored, not answered
RETRY_AFTER_S = 1
GRACEFUL_SHUTDOWN_S = 30  # uvicorn waits this long for in-flight requests after SIGTERM


class RequestError(Exception):
    """A request the server refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


# --- batching -----------------------------------------------------------------------------------------------

@dataclass
class _Pending:
    texts: list[str]
    true: np.ndarray  # class ids, NO_LABEL where the request carried none
    future: asyncio.Future


class Batcher:
    """Requests in a bounded queue; one worker scores up to `max_batch` rows (or what came within `max_wait_ms` of
    the first) in one classifier call, in a thread, sorted by length, and answers each request with its rows. The
    classifier is taken from `source` at the start of each batch (an alias switch lands between batches); each
    scored batch is then handed to the `observers` (shadow, health windows), which must not block."""

    def __init__(self, source, max_batch: int, max_wait_ms: float, max_queue: int, stats: Metrics,
                 observers: tuple = ()):
        self.source = source
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.max_queue, self.stats, self.observers = max_queue, stats, tuple(observers)
        self.embeddings = any(getattr(o, "wants_embeddings", False) for o in self.observers)
        self.queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()  # one classifier call at a time, whichever loop asks
        self._batches = 0
        # Requests received but not yet queued (their body still being read and parsed): the worker waits up to
        # max_wait_ms for these only. Alone (one client), a request is scored at once, not max_wait_ms later.
        self.arriving = 0

    def _classifier(self):
        return self.source.current().model

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

    async def score(self, texts: list[str], true: np.ndarray | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
        """(probabilities in request order, the labels of the model that scored them), once the worker has scored
        them with others."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        true = np.full(len(texts), NO_LABEL, dtype=np.int64) if true is None else true
        try:
            self.queue.put_nowait(_Pending(texts, true, future))
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
                waiting = remaining > 0 and self.arriving > 0  # wait only for a request already on its way
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining) if waiting else self.queue.get_nowait()
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
        served = self.source.current()  # this batch's classifier, whatever the alias does meanwhile
        try:
            logits, pooled = await asyncio.to_thread(self._logits, served.model, [texts[i] for i in order])
            probabilities = np.empty_like(logits)
            probabilities[order] = metrics.probabilities(np.asarray(logits, dtype=np.float64))
            embeddings = None
            if pooled is not None:
                embeddings = np.empty_like(pooled)
                embeddings[order] = pooled
        except Exception as exc:  # noqa: BLE001  (every waiting request hears it; the worker keeps serving)
            log.exception("scoring a batch of %d rows failed", len(texts))
            self.stats.error("scoring")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RequestError(500, f"scoring failed: {exc}".splitlines()[0]))
            return
        self.stats.batch_rows.observe(len(texts))
        labels, start = tuple(served.model.labels), 0
        for pending in batch:
            end = start + len(pending.texts)
            if not pending.future.done():
                pending.future.set_result((probabilities[start:end], labels))
            start = end
        self._batches += 1
        self._observe(Scored(texts, probabilities, np.concatenate([p.true for p in batch]), embeddings, served,
                             self._batches))

    def _observe(self, scored: Scored) -> None:
        for observer in self.observers:
            try:
                observer.observe(scored)
            except Exception:  # noqa: BLE001  (watching the traffic never fails a request)
                log.exception("%s could not take a batch", type(observer).__name__)

    def _logits(self, model, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        with self._lock:
            if self.embeddings and hasattr(model, "logits_and_embeddings"):
                logits, pooled = model.logits_and_embeddings(texts)
                return np.asarray(logits), pooled
            return np.asarray(model.logits(texts)), None


# --- the protocol -------------------------------------------------------------------------------------------

def _columns_hint(task: Task) -> str:
    return (f"the model's text columns are {', '.join(task.text_columns)} (or one 'text' column, or title and "
            "description)")


def parse_texts(payload: object, task: Task = AG_NEWS) -> list[str]:
    """The cleaned texts of a scoring request (MLflow's protocol), or a RequestError(400) with a one-line reason."""
    return parse_request(payload, task)[0]


def parse_request(payload: object, task: Task = AG_NEWS) -> tuple[list[str], list | None]:
    """(cleaned texts, each row's true label from a `label` field or column, or None when the request has none)."""
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
    return _cleaned(pd.Series(value, dtype=object), task), None


def _from_frame(frame: pd.DataFrame, task: Task) -> tuple[list[str], list | None]:
    """The model's text columns first, else `text`, else title+description, as predict reads a file; the `label`
    column, when there is one, as the rows' true labels."""
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
    return _cleaned(text, task), (frame[LABEL].tolist() if LABEL in frame.columns else None)


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

def create_app(classifier_factory: Callable[[], Any] | None = None, max_batch: int = 32, max_wait_ms: float = 5,
               max_queue: int = 256, max_body_bytes: int = 1 << 20, task: Task = AG_NEWS,
               info: dict | None = None, source=None, observers: tuple = ()):
    """The ASGI app. `classifier_factory()` returns the loaded classifier (called once, at startup or the first
    request) and `info` (model_uri, version) is shown by /health; or `source` (agnews/serving/follow.py's Follower)
    gives the classifier of each batch. `task` says how request columns become texts. `observers` (the shadow
    scorer, the health windows) see every scored batch; like the source they have start, stop, health (a dict
    merged into /health) and metric_lines (added to /metrics), and start at startup or the first request."""
    source = source if source is not None else Static(classifier_factory, info)
    helpers, started, lock = (source, *observers), [], threading.Lock()
    stats = Metrics()
    batcher = Batcher(source, max_batch, max_wait_ms, max_queue, stats, observers)

    def start() -> None:
        with lock:
            if not started:
                for helper in helpers:
                    helper.start()
                started.append(True)

    def stop() -> None:
        with lock:
            for helper in reversed(helpers):
                helper.stop()
            started.clear()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await asyncio.to_thread(start)
        batcher.start()
        yield
        await batcher.stop()
        await asyncio.to_thread(stop)

    app = FastAPI(title="agnews-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.metrics, app.state.stop = batcher, stats, stop

    def refuse(error: RequestError, started_at: float) -> Response:
        stats.error({400: "bad_request", 413: "too_large", 503: "queue_full"}.get(error.status, "failed"))
        stats.answered(error.status, time.perf_counter() - started_at)
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

    async def served() -> Served:
        if not started:
            await asyncio.to_thread(start)
        return source.current()

    def true_labels(raw: list | None, labels: tuple[str, ...]) -> np.ndarray | None:
        try:
            return None if raw is None else label_ids(raw, labels)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        started_at = time.perf_counter()
        try:
            batcher.arriving += 1
            try:
                raw = await body(request)
                try:
                    payload = json.loads(raw)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise RequestError(400, f"malformed JSON: {exc}".splitlines()[0]) from None
                texts, raw_labels = parse_request(payload, task)
                true = true_labels(raw_labels, tuple((await served()).model.labels))
            finally:
                batcher.arriving -= 1
            probabilities, labels = await batcher.score(texts, true)
        except RequestError as error:
            return refuse(error, started_at)
        stats.answered(200, time.perf_counter() - started_at, len(texts))
        return JSONResponse({"predictions": predictions(probabilities, labels)})

    @app.get("/ping")
    async def ping() -> Response:
        return PlainTextResponse("\n")

    @app.get("/health")
    async def health() -> dict:
        now = await served()
        model, out = now.model, {"status": "ok", **now.info}
        out.update(variant=getattr(model, "variant", ""), precision=getattr(model, "precision", ""),
                   labels=list(model.labels), rows_served=stats.rows, requests_served=stats.requests.get(200, 0),
                   queue_depth=batcher.depth(), max_batch=max_batch, max_wait_ms=max_wait_ms)
        for helper in helpers:
            out.update(helper.health())
        return out

    @app.get("/metrics")
    async def prometheus() -> Response:
        extra = [line for helper in helpers for line in helper.metric_lines()]
        return PlainTextResponse(stats.text(batcher.depth(), extra), media_type="text/plain; version=0.0.4")

    return app


def run(app, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    """uvicorn on host:port until SIGTERM or SIGINT. SIGTERM: stop accepting, drain the requests in flight (at most
    GRACEFUL_SHUTDOWN_S), then return, so the process exits 0 (uvicorn re-raises the signal it caught once it has
    shut down; a handler that only logs takes it instead of the default one, which would end the process with -15)."""
    import uvicorn

    signal.signal(signal.SIGTERM, lambda number, frame: log.info("SIGTERM: in-flight requests drained; exiting"))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
