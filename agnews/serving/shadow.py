"""Shadow the challenger: every batch the server answers is also scored by the version holding another alias (by
default none; `-P shadow=challenger`), in a single worker thread of its own, off the response path. The worker
takes one batch at a time; a batch that arrives while it is busy is dropped and counted (the shadow never slows
the served model down). Agreement with the served model's class, and accuracy where the requests carried labels,
are accumulated for /health and /metrics, and per batch for the health windows, which `claim` the tallies of their
own batches (a batch the shadow dropped counts in no window's agreement)."""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import asdict, dataclass

import numpy as np

from agnews.serving.telemetry import counter
from agnews.serving.traffic import NO_LABEL, Scored

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """What the shadow saw: rows both scored, rows where they agreed, and over the labelled rows who was right."""

    rows: int = 0
    agreed: int = 0
    labelled: int = 0
    shadow_correct: int = 0
    served_correct: int = 0

    def add(self, other: "Tally") -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def summary(self) -> dict:
        """Counts plus agreement and the two accuracies (None where there is nothing to divide by)."""
        share = lambda part, whole: part / whole if whole else None  # noqa: E731
        return {**asdict(self), "agreement": share(self.agreed, self.rows),
                "shadow_accuracy": share(self.shadow_correct, self.labelled),
                "served_accuracy": share(self.served_correct, self.labelled)}


class Shadow:
    """`challenger` is a Follower of the shadow alias (required=False: it may hold no version yet)."""

    def __init__(self, challenger, queue_size: int = 1):
        self.challenger = challenger
        self._queue: queue.Queue[Scored | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Condition()
        self.total = Tally()
        self.keep_batches = False  # set by the health windows: keep each batch's tally until a window claims it
        self._settled: dict[int, Tally | None] = {}  # batch key -> its tally (None: dropped, failed or no challenger)
        self.dropped = self.failed = self.unscored = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.challenger.start()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=5)
            except queue.Full:
                pass
            self._thread.join(timeout=30)
            self._thread = None
        self.challenger.stop()

    def observe(self, scored: Scored) -> None:
        """Called by the batch worker: hand the batch over, or drop it when the shadow is still busy."""
        try:
            self._queue.put_nowait(scored)
        except queue.Full:
            self.dropped += 1
            self._settle(scored.key, None)

    def claim(self, keys: list[int], timeout: float = 10) -> dict:
        """The tally of these batches (a window's), once the shadow has settled them (at most `timeout`), and the
        challenger's version."""
        with self._lock:
            self._lock.wait_for(lambda: all(k in self._settled for k in keys), timeout)
            window = Tally()
            for key in keys:
                tally = self._settled.pop(key, None)
                if tally is not None:
                    window.add(tally)
        served = self.challenger.current()
        return {**window.summary(), "alias": self.challenger.alias, "version": served.version if served else ""}

    def _settle(self, key: int, tally: Tally | None) -> None:
        with self._lock:
            if tally is not None:
                self.total.add(tally)
            if self.keep_batches:
                self._settled[key] = tally
            self._lock.notify_all()

    def health(self) -> dict:
        served = self.challenger.current()
        with self._lock:
            summary = self.total.summary()
        return {"shadow": {**summary, "alias": self.challenger.alias, "version": served.version if served else "",
                           "batches_dropped": self.dropped, "batches_failed": self.failed,
                           "batches_without_challenger": self.unscored}}

    def metric_lines(self) -> list[str]:
        with self._lock:
            total = self.total
        agreement = total.agreed / total.rows if total.rows else float("nan")
        return [*counter("agnews_shadow_rows_total", "Rows scored by the shadow (challenger) model too.", total.rows),
                *counter("agnews_shadow_agreed_total", "Rows where the shadow chose the served model's class.",
                         total.agreed),
                *counter("agnews_shadow_agreement", "Share of shadowed rows where the two models agree.", agreement,
                         "gauge"),
                *counter("agnews_shadow_labelled_rows_total", "Shadowed rows whose request carried a label.",
                         total.labelled),
                *counter("agnews_shadow_correct_total", "Labelled rows the shadow model got right.",
                         total.shadow_correct),
                *counter("agnews_shadow_served_correct_total", "Labelled shadowed rows the served model got right.",
                         total.served_correct),
                *counter("agnews_shadow_batches_dropped_total", "Batches not shadowed: the shadow was busy.",
                         self.dropped),
                *counter("agnews_shadow_batches_failed_total", "Batches the shadow model failed to score.",
                         self.failed),
                *self.challenger.metric_lines()]

    def _work(self) -> None:
        while True:
            scored = self._queue.get()
            if scored is None:
                return
            tally = None
            try:
                tally = self._score(scored)
            except Exception:  # noqa: BLE001  (the shadow never takes the server down)
                self.failed += 1
                log.exception("the shadow model failed to score a batch of %d rows", len(scored.texts))
            self._settle(scored.key, tally)

    def _score(self, scored: Scored) -> Tally | None:
        served = self.challenger.current()
        if served is None:
            self.unscored += 1
            return None
        if tuple(served.model.labels) != tuple(scored.served.model.labels):
            raise ValueError(f"the shadow's labels {served.model.labels} are not the served model's")
        predicted = np.asarray(served.model.logits(scored.texts)).argmax(axis=1)
        labelled = scored.true != NO_LABEL
        return Tally(len(predicted), int((predicted == scored.predicted).sum()), int(labelled.sum()),
                     int((predicted[labelled] == scored.true[labelled]).sum()),
                     int((scored.predicted[labelled] == scored.true[labelled]).sum()))
