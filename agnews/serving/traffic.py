"""What the online server hands the helpers around it: the version being served (`Served`), one scored batch
(`Scored`, observed by the shadow scorer and the health windows off the response path), the source that serves one
fixed classifier (`Static`; agnews/serving/follow.py's Follower is the one that follows an alias), and the true
labels a request may carry, as class ids."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

NO_LABEL = -1  # a row whose request carried no label


@dataclass(frozen=True)
class Served:
    """A loaded classifier and what /health says about it (model_uri, registered_model, version, ...)."""

    model: Any
    info: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.info.get("version", ""))


@dataclass
class Scored:
    """One batch as the served model scored it (request order within the batch)."""

    texts: list[str]
    probabilities: np.ndarray  # (rows, classes)
    true: np.ndarray  # class id per row, NO_LABEL where the request carried none
    embeddings: np.ndarray | None  # mean-pooled last hidden layer, when the health windows asked for it
    served: Served
    key: int = 0  # the batch's number since the server started

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


class Static:
    """One classifier for the server's whole life (a pinned version, a runs:/ URI, a test's fake): built once by
    `factory`, at startup or at the first request."""

    def __init__(self, factory: Callable[[], Any], info: dict | None = None):
        self._factory, self._info = factory, dict(info or {})
        self._served: Served | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self.current()

    def current(self) -> Served:
        with self._lock:
            if self._served is None:
                self._served = Served(self._factory(), self._info)
            return self._served

    def stop(self) -> None:
        """Nothing to close: the caller owns what the factory returns."""

    def health(self) -> dict:
        return {}

    def metric_lines(self) -> list[str]:
        return []


def label_ids(raw: list, labels: tuple[str, ...]) -> np.ndarray:
    """Class ids of the labels a request carried (a class name, or its id as a number), NO_LABEL where a row had
    none; ValueError naming the first row whose label is neither."""
    names = {name: i for i, name in enumerate(labels)}
    out = np.full(len(raw), NO_LABEL, dtype=np.int64)
    for row, value in enumerate(raw):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        if isinstance(value, str) and value in names:
            out[row] = names[value]
        elif not isinstance(value, bool) and isinstance(value, (int, float, str)) and str(value).strip().isdigit() \
                and int(str(value).strip()) < len(labels):
            out[row] = int(str(value).strip())
        else:
            raise ValueError(f"row {row + 1} has label {value!r}; send one of {', '.join(labels)} (or its class id "
                             f"0-{len(labels) - 1}), or no label")
    return out
