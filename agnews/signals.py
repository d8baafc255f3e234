"""Interrupts: SIGTERM (torchrun's and every scheduler's stop signal) behaves like Ctrl-C, so a step ends
its run KILLED and undoes what it half-wrote instead of vanishing with its run left RUNNING."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
from typing import Iterator

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception. A KeyboardInterrupt, so MLflow's own wait (`mlflow.projects.run`) cancels
    the child run it is waiting for before the exception reaches us."""

    signal_name = "SIGTERM"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install(parent_death: bool) -> None:
    """SIGTERM raises Terminated; SIGINT raises KeyboardInterrupt even where the shell had it ignored; with
    `parent_death`, when the process that launched us (`mlflow run`) dies, the kernel sends us SIGTERM (Linux)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not parent_death:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a killed parent leaves us to finish on our own
        log.debug("no parent-death signal on this platform")


@contextlib.contextmanager
def deferred(redeliver: bool = False) -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the run is being closed (undo, tag, end); the step exits right after anyway.
    `redeliver`: a signal held meanwhile is raised again once the block is done (starting a child: the run it
    created is recorded first, so the interrupt then cancels it instead of leaving it RUNNING)."""
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending and redeliver:
            signal.raise_signal(pending[0])
        elif pending:
            log.warning("signal %s arrived while the run was being closed; it was closed first",
                        signal.Signals(pending[0]).name)
