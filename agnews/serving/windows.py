"""Watch the traffic: the rows the server answers (texts, probabilities, true labels where requests carried them,
pooled embeddings) are collected in health windows of at least `window_rows` rows and at most `window_s` seconds
(a version switch also closes one: a window is one version's traffic). A closed window is handed to `sink` (the
health check and its MLflow run, agnews/monitoring/serving_windows.py, injected by steps/serve.py: serving ranks
below monitoring) in a background thread, never on the request path. A window the sink fails on (a tracking store
that is down) is tried once more `retry_s` later, then dropped with a warning and counted; requests are answered
all along."""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from agnews.serving.telemetry import counter
from agnews.serving.traffic import Scored, Served

log = logging.getLogger(__name__)
MAX_PENDING = 20  # closed windows waiting for the sink; beyond it the oldest is dropped (a store down for long)


@dataclass
class Window:
    """One version's rows over one window, and what closed it (rows, time, switch or stop)."""

    served: Served
    opened: float  # time.time()
    texts: list[str] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)  # the batches in it (the shadow's tallies are claimed by them)
    probabilities: list[np.ndarray] = field(default_factory=list)
    true: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] | None = field(default_factory=list)
    closed: float = 0.0
    closed_by: str = ""
    shadow: dict | None = None
    log_inputs: bool = False
    attempts: int = 0

    @property
    def rows(self) -> int:
        return len(self.texts)

    def add(self, scored: Scored) -> None:
        self.texts += scored.texts
        self.keys.append(scored.key)
        self.probabilities.append(scored.probabilities)
        self.true.append(scored.true)
        if scored.embeddings is None or self.embeddings is None:
            self.embeddings = None  # one batch without them: the window has none (the statistic is skipped)
        else:
            self.embeddings.append(scored.embeddings)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(probabilities, true class ids with NO_LABEL, embeddings or None), one row per text."""
        return (np.concatenate(self.probabilities), np.concatenate(self.true),
                np.concatenate(self.embeddings) if self.embeddings else None)


class Windows:
    """The open window, the closed ones waiting for the sink, and the thread that logs them."""

    wants_embeddings = True  # the batch worker keeps the pooled hidden states of the same forward pass

    def __init__(self, sink: Callable[[Window], dict], window_rows: int = 200, window_s: float = 300,
                 log_inputs: bool = False, shadow=None, retry_s: float = 30, tick_s: float = 0.5):
        self.sink, self.window_rows, self.window_s, self.log_inputs = sink, window_rows, window_s, log_inputs
        self.shadow, self.retry_s, self.tick_s = shadow, retry_s, tick_s
        if shadow is not None:
            shadow.keep_batches = True
        self._open: Window | None = None
        self._pending: collections.deque[tuple[float, Window]] = collections.deque()
        self._lock, self._stopped = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None
        self.logged = self.dropped = self.failures = 0
        self.last: dict = {}

    def start(self) -> None:
        self._stopped.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="health-windows", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Close the open window and give every waiting one a last try (within `timeout`)."""
        with self._lock:
            self._close("stop")
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def observe(self, scored: Scored) -> None:
        """Called by the batch worker after it answered: append the batch (cheap; no I/O here)."""
        with self._lock:
            if self._open is not None and self._open.served is not scored.served:
                self._close("switch")
            if self._open is None:
                self._open = Window(scored.served, time.time(), log_inputs=self.log_inputs)
            self._open.add(scored)
            if self._open.rows >= self.window_rows:
                self._close("rows")

    def health(self) -> dict:
        with self._lock:
            open_rows = self._open.rows if self._open is not None else 0
            waiting = len(self._pending)
        return {"windows": {"logged": self.logged, "dropped": self.dropped, "failed_attempts": self.failures,
                            "waiting": waiting, "open_rows": open_rows, "window_rows": self.window_rows,
                            "window_s": self.window_s, "last": self.last}}

    def metric_lines(self) -> list[str]:
        return [*counter("agnews_windows_logged_total", "Health windows logged as MLflow runs.", self.logged),
                *counter("agnews_windows_dropped_total", "Health windows dropped: logging failed twice (tracking "
                                                         "store down?) or too many were waiting.", self.dropped),
                *counter("agnews_windows_failed_attempts_total", "Attempts to log a health window that failed.",
                         self.failures),
                *counter("agnews_windows_waiting", "Closed health windows waiting to be logged.", len(self._pending),
                         "gauge")]

    # --- the logging thread ---
    def _close(self, why: str) -> None:
        """Under the lock: the open window joins the ones waiting for the sink."""
        window, self._open = self._open, None
        if window is None or not window.rows:
            return
        window.closed, window.closed_by = time.time(), why
        if len(self._pending) >= MAX_PENDING:
            _, oldest = self._pending.popleft()
            self._drop(oldest, f"more than {MAX_PENDING} windows waiting")
        self._pending.append((0.0, window))

    def _work(self) -> None:
        while not self._stopped.wait(self.tick_s):
            with self._lock:
                if self._open is not None and time.time() - self._open.opened >= self.window_s:
                    self._close("time")
            self._log_due(time.time())
        self._log_due(float("inf"), last=True)

    def _log_due(self, now: float, last: bool = False) -> None:
        while True:
            with self._lock:
                due = [item for item in self._pending if item[0] <= now]
                if not due:
                    return
                self._pending.remove(due[0])
            self._log(due[0][1], last)

    def _log(self, window: Window, last: bool) -> None:
        window.attempts += 1
        if self.shadow is not None and window.shadow is None:
            window.shadow = self.shadow.claim(window.keys)  # in this thread: waits for the shadow, not a request
        try:
            self.last = {**self.sink(window), "rows": window.rows, "version": window.served.version}
            self.logged += 1
        except Exception as exc:  # noqa: BLE001  (a store that is down must not stop the serving)
            self.failures += 1
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if window.attempts >= 2 or last:
                self._drop(window, reason)
                return
            log.warning("health window of %d rows (version %s) not logged (%s); retrying in %gs", window.rows,
                        window.served.version, reason, self.retry_s)
            with self._lock:
                self._pending.append((time.time() + self.retry_s, window))

    def _drop(self, window: Window, reason: str) -> None:
        self.dropped += 1
        if self.shadow is not None and window.shadow is None:
            self.shadow.claim(window.keys, timeout=0)  # its batches' tallies are no one's now
        log.warning("health window of %d rows (version %s, %s to %s) dropped: %s", window.rows,
                    window.served.version, time.strftime("%H:%M:%S", time.localtime(window.opened)),
                    time.strftime("%H:%M:%S", time.localtime(window.closed)), reason)
