"""agnews/runs/signals.py: one interrupt per process, signals held while a run is closed."""
from __future__ import annotations

import signal

import pytest

from agnews.runs import signals


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


def test_a_signal_after_figures_were_staged_leaves_neither_them_nor_a_published_copy(fresh, store, tmp_path):
    """A step killed once its figures exist (training's are drawn at the end, so the CLI signal test kills
    before any): the run ends KILLED, its staging folder goes, graficas/ gets nothing."""
    import mlflow

    from agnews.runs import lifecycle, staging

    with pytest.raises(SystemExit, match=r"^error: train interrupted by SIGTERM; run \w+ ended KILLED"):
        with lifecycle.step_run("train", plots=True) as run:
            figure = staging.folder() / "tiny-bert_confusion.png"
            figure.write_bytes(b"png")
            lifecycle.publish_on_success(figure)
            signal.raise_signal(signal.SIGTERM)
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "KILLED"
    assert not figure.parent.exists()
    assert not list((tmp_path / "graficas").iterdir())
