"""Interrupts: SIGTERM (torchrun's and every scheduler's stop signal) and SIGHUP (the terminal or ssh session
`main` ran in went away) behave like Ctrl-C, so a step ends its run KILLED and undoes what it half-wrote instead
of vanishing with its run left RUNNING, and a hung-up `main` cancels its children (Slurm jobs outlive it otherwise).

One interrupt per process: the first SIGINT/SIGTERM/SIGHUP raises; every later one is recorded and logged, never raised,
because the process is then closing its run. Under `main` a child gets two SIGTERMs within milliseconds (the
terminal's or scheduler's, then main's cancel): a second exception landing in the cleanup left the run open, and
MLflow's exit handler then ended it FINISHED."""
from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
from typing import Iterator

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_state = {"stopping": False, "holding": 0}
_pending: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP as an exception. A KeyboardInterrupt, so MLflow's own wait (`mlflow.projects.run`)
    cancels the child run it is waiting for before the exception reaches us."""

    def __init__(self, signal_name: str = "SIGTERM"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _interrupt(signum, frame) -> None:
    """Raise for the first signal; record any signal while a run is being closed or after the first."""
    if _state["stopping"] or _state["holding"]:
        _pending.append(signum)
        if _state["stopping"] and not _state["holding"]:
            log.warning("%s ignored: this step is already stopping", signal.Signals(signum).name)
        return
    _state["stopping"] = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    raise Terminated(signal.Signals(signum).name)


def _handled() -> list[int]:
    """The signals we take over: all of SIGNALS but a SIGHUP this process ignores (`nohup`: keep running)."""
    return [sig for sig in SIGNALS if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN)]


def install(parent_death: bool) -> None:
    """SIGTERM and SIGHUP raise Terminated; SIGINT raises KeyboardInterrupt even where the shell had it ignored
    (a SIGHUP ignored on purpose, under `nohup`, stays ignored); with `parent_death`, when the process that
    launched us (`mlflow run`) dies, the kernel sends us SIGTERM (Linux)."""
    for sig in _handled():
        signal.signal(sig, _interrupt)
    if not parent_death:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a killed parent leaves us to finish on our own
        log.debug("no parent-death signal on this platform")


@contextlib.contextmanager
def deferred(redeliver: bool = False) -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while the run is being closed (undo, tag, end); the step exits right after anyway.
    `redeliver`: a signal held meanwhile is raised again once the block is done (starting a child: the run it
    created is recorded first, so the interrupt then cancels it instead of leaving it RUNNING). Outside a step
    (no `install`), our handler stands in for the block and the previous ones come back after it."""
    previous = {sig: signal.getsignal(sig) for sig in _handled()}
    installed = all(handler is _interrupt for handler in previous.values())
    _state["holding"] += 1  # before any swap: a signal landing from here on is recorded
    if not installed:
        for sig in previous:
            signal.signal(sig, _interrupt)
    start = len(_pending)
    try:
        yield
    finally:
        _state["holding"] -= 1
        if not installed:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        held = _pending[start:]
        if held and redeliver and not _state["stopping"]:
            signal.raise_signal(held[0])
        elif held:
            log.warning("signal %s arrived while the run was being closed; it was closed first",
                        signal.Signals(held[0]).name)
