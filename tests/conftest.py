"""Fixtures (a tiny BERT built here, a small AG-News-format CSV, an isolated MLflow store) and the run order. The
builders they use, and the tests too, are in tests/helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import build_tiny_bert, forget_active_experiment, use_this_python, write_agnews_csv

os.environ.pop("AGNEWS_LAUNCH_DIR", None)  # set by the project's MLflow plugin from pytest's cwd: not a launch
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one torch thread each (children inherit)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The run order, a folder rule: processes (e2e) first, then in-process steps, then unit tests, so the two xdist
# workers (one test file at a time each) finish together instead of one running a long file alone at the end.
# Within a folder, the files that took longest in this checkout's last run come first (pytest's cache).
FOLDER_ORDER = ("e2e", "steps", "unit")
DURATIONS_KEY = "agnews/file_seconds"


def _folder_rank(path: Path) -> int:
    parts = path.relative_to(Path(__file__).parent).parts
    return FOLDER_ORDER.index(parts[0]) if parts[0] in FOLDER_ORDER else len(FOLDER_ORDER)


def pytest_collection_modifyitems(config, items):
    seconds = config.cache.get(DURATIONS_KEY, {}) if config.cache else {}
    items.sort(key=lambda item: (_folder_rank(item.path), -seconds.get(item.nodeid.split("::")[0], 0.0)))


_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _file_seconds[report.nodeid.split("::")[0]] = _file_seconds.get(report.nodeid.split("::")[0], 0.0) + \
        report.duration


def pytest_sessionfinish(session):
    if session.config.cache is not None and _file_seconds and not os.environ.get("PYTEST_XDIST_WORKER"):
        known = session.config.cache.get(DURATIONS_KEY, {})
        session.config.cache.set(DURATIONS_KEY, {**known, **{k: round(v, 1) for k, v in _file_seconds.items()}})


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def fixture_csv(tmp_path_factory) -> Path:
    return write_agnews_csv(tmp_path_factory.mktemp("data") / "agnews_fixture.csv")


@pytest.fixture()
def store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store + artifact folder for one test; plots go to tmp too."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    forget_active_experiment(monkeypatch)
    use_this_python(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("AGNEWS_PLOTS_DIR", str(tmp_path / "graficas"))
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.end_run()
