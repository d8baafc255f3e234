"""The team setup: `main` logging to a real `mlflow server` whose store is PostgreSQL, all on 127.0.0.1."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest

from tests.helpers import SMALL_AND_TINY, by_step, free_port, project_copy, running_cli, wait_for_http


def _as_postgres(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres_uri():
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    assert initdb, "PostgreSQL server binaries are missing: apt-get install -y postgresql (.ci/run does)"
    bin_dir = Path(initdb).parent
    folder = Path(tempfile.mkdtemp(prefix="agnews-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres(str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
                                "--auth=trust"), check=True, capture_output=True)
    subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"),
                                "-o", f"-h 127.0.0.1 -p {port} -k {folder}", "-w", "start"), check=True,
                   capture_output=True)
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE mlflow"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "stop"),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres_uri, tmp_path_factory):
    port = free_port()
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", postgres_uri,
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # Without MLflow's server-side job runner (GenAI evaluation jobs the pipeline never submits): its eight
        # huey consumer processes cost ~30 s of CPU to start and poll all along.
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", server, 120, "mlflow server did not answer /health in 120 s")
    yield url, artifacts
    server.terminate()
    server.wait(timeout=30)


def test_two_mains_at_once_against_postgres_backed_server(tracking_server, tmp_path, fixture_csv, tiny_model):
    """The team setup, two users at once: both `main` runs succeed against one server (experiment created once,
    each run logs its own figures, the promotions one after the other), artifacts proxied by the server."""
    url, artifacts = tracking_server
    project = project_copy(tmp_path / "project")
    params = ["-P", f"models={tiny_model}", "-P", f"data={fixture_csv}", *SMALL_AND_TINY, "-P", "int8=false",
              "-P", "min_gate_rows=10", "-P", "min_gate_rows_per_class=2"]  # the other seed's 40-row gate keeps
    # ~20 rows neither model saw
    with contextlib.ExitStack() as both:
        # each its own cache folder, as two users' machines: nothing but the server is shared
        procs = [both.enter_context(running_cli(project, *params, *extra, env={
            "MLFLOW_TRACKING_URI": url, "XDG_CACHE_HOME": str(tmp_path / f"cache-{k}")}))
                 for k, extra in enumerate(([], ["-P", "seed=7"]))]
        outputs = [proc.communicate(timeout=900) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outputs]
    assert not (project / "mlflow.db").exists()  # nothing went to the embedded default store
    client = mlflow.MlflowClient(tracking_uri=url)
    [experiment] = client.search_experiments(filter_string="name = 'agnews-classification'")
    runs = client.search_runs([experiment.experiment_id])
    parents = by_step(runs, "main")
    assert len(parents) == 2 and len(runs) == 10 and all(r.info.status == "FINISHED" for r in runs)
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["agnews.step"] for r in children) == ["compare", "evaluate", "prepare_data", "train"]
        [train] = by_step(children, "train")
        assert len(client.get_metric_history(train.info.run_id, "val_f1_macro")) == 3
    decisions = sorted(r.data.tags["agnews.promotion_decision"] for r in by_step(runs, "compare"))
    assert decisions[0] == "first_champion" and decisions[1] in ("kept_incumbent", "promoted"), decisions
    champion = client.get_model_version_by_alias("agnews-classifier", "champion")
    assert champion.run_id in {r.info.run_id for r in by_step(runs, "train")}
    assert len(list(artifacts.rglob("comparison_radar.png"))) == 2  # artifacts proxied into the server's destination


def test_two_compares_on_two_machines_never_hold_the_promotion_lock_at_once(tracking_server, tmp_path):
    """Two processes with no file in common (each its own cache folder, as on two machines) against one server: the
    promotion lock is a lease in the store, so their holds never overlap. Until 2026-12 it was a file in each
    machine's cache folder, and both held it at once."""
    url, _ = tracking_server
    holder = ("import sys, time\nfrom agnews.decide import promotion\n"
              "with promotion.promotion_lock('agnews-classifier') as hold:\n"
              "    start = time.time(); time.sleep(1.5); hold.verify(); print(start, time.time(), flush=True)\n")
    procs = []
    for machine in ("a", "b"):
        cache = tmp_path / machine
        cache.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "XDG_CACHE_HOME": str(cache)}
        procs.append(subprocess.Popen([sys.executable, "-c", holder], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    (a_start, a_end), (b_start, b_end) = sorted(tuple(map(float, out.split())) for out, _ in outputs)
    assert a_end <= b_start, "both held the promotion lock at once"
    client = mlflow.MlflowClient(tracking_uri=url)
    assert not client.search_registered_models("name = 'agnews-classifier.promotion.lease'")  # released
