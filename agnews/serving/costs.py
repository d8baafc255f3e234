"""The serving cost, measured the same way for every model and variant on the machine it runs on: latency p50/p95
at batch 1 and throughput at batch 32 after warm-up, peak memory, and the model's size on disk."""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from agnews.errors import PipelineError
from agnews.serving import classifiers

log = logging.getLogger(__name__)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


# --- cost ---------------------------------------------------------------------------------------------------

def _status_kb(key: str) -> float:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return float(match.group(1)) if match else float("nan")


@contextlib.contextmanager
def peak_memory() -> Iterator[Callable[[], float]]:
    """MB the block added to the process at its peak (Linux: the high-water mark is reset on entry)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _status_kb("VmRSS")
    except OSError:  # not Linux, or not allowed: report no number rather than a wrong one
        yield lambda: float("nan")
        return
    yield lambda: max(0.0, _status_kb("VmHWM") - base) / 1024


def cost(classifier: classifiers.Classifier, texts: list[str]) -> dict[str, float]:
    """Latency at batch 1 (p50/p95, ms) and throughput at batch 32 (texts/s), after warm-up, on these texts."""
    if not texts:
        raise PipelineError("no texts to measure serving cost on; the test split is empty")
    sample = [texts[i % len(texts)] for i in range(classifiers.LATENCY_TEXTS)]
    for text in sample[:classifiers.WARMUP]:
        classifier.logits([text])
    seconds = []
    for text in sample:
        start = time.perf_counter()
        classifier.logits([text])
        seconds.append(time.perf_counter() - start)
    p50, p95 = np.percentile(np.array(seconds) * 1000, [50, 95])
    batch = [texts[i % len(texts)] for i in range(classifiers.THROUGHPUT_BATCH * classifiers.THROUGHPUT_BATCHES)]
    classifier.logits(batch[:classifiers.THROUGHPUT_BATCH], batch_size=classifiers.THROUGHPUT_BATCH)
    start = time.perf_counter()
    classifier.logits(batch, batch_size=classifiers.THROUGHPUT_BATCH)
    return {"latency_p50_ms": float(p50), "latency_p95_ms": float(p95),
            "throughput_per_s": len(batch) / (time.perf_counter() - start)}
