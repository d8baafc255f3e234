"""agnews/signals.py: one interrupt per process, signals held while a run is closed."""
from __future__ import annotations

import signal

import pytest

from agnews import signals


@pytest.fixture()
def fresh(monkeypatch):
    """The module's state as in a new step process; this process' own handlers back afterwards."""
    monkeypatch.setattr(signals, "_state", {"stopping": False, "holding": 0})
    monkeypatch.setattr(signals, "_pending", [])
    previous = {sig: signal.getsignal(sig) for sig in signals.SIGNALS}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_the_first_signal_raises_and_later_ones_are_recorded(fresh):
    """Under `main` a child gets the terminal's SIGTERM and then main's cancel within milliseconds: the second
    must not land in the cleanup the first started (the run was left open, then ended FINISHED at exit)."""
    signals.install(parent_death=False)
    with pytest.raises(signals.Terminated):
        signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGINT)
    assert signals._pending == [signal.SIGTERM, signal.SIGINT]


def test_deferred_holds_a_signal_and_redelivers_it_after_the_block(fresh):
    signals.install(parent_death=False)
    with pytest.raises(KeyboardInterrupt):
        with signals.deferred(redeliver=True):
            signal.raise_signal(signal.SIGINT)  # held: the block finishes first
            finished = True
    assert finished


def test_deferred_outside_a_step_stands_in_and_restores_the_handlers(fresh):
    before = {sig: signal.getsignal(sig) for sig in signals.SIGNALS}
    with signals.deferred():
        assert signal.getsignal(signal.SIGTERM) is signals._interrupt
        signal.raise_signal(signal.SIGTERM)  # recorded, logged after the block
    assert {sig: signal.getsignal(sig) for sig in signals.SIGNALS} == before
    assert signals._pending == [signal.SIGTERM] and not signals._state["stopping"]
