"""Shared builders for the tests (no fixtures: those are in conftest.py): the fixture corpus and a tiny BERT, stores
entered in-process, steps run in-process, the real `mlflow` CLI, servers on 127.0.0.1. Test modules import from here,
never from each other."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]  # tests/helpers.py
REAL_TEST_CSV = REPO / "data" / "ag_news" / "test.csv.gz"  # shipped: a clone tests on its own (see its README)
WORDS = {  # class-specific words so a tiny model can learn the task in a few epochs
    1: "election minister government war president parliament troops treaty".split(),
    2: "game team season coach score league match championship".split(),
    3: "stocks market profit shares company earnings investors bank".split(),
    4: "software internet computer space research chip google microsoft".split(),
}
FILLER = "the a of in on new says after report week".split()

EPOCHS = 3
SMALL = ["-P", "train_size=80", "-P", "val_size=40", "-P", "test_size=40", "-P", "gate_size=40"]
FIXTURE_ROWS = 240  # write_agnews_csv's default: 60 rows per class
TINY = ["-P", f"epochs={EPOCHS}", "-P", "learning_rate=0.01", "-P", "batch_size=8"]
SMALL_AND_TINY = SMALL + TINY
# A training still running when a test signals or cancels it (after its first epoch): a tiny epoch takes ~0.3 s once
# the libraries load from .pyc, and a CI run at 40 epochs saw a second train job finish (23 s) before the cancel came.
UNTIL_CANCELLED = ["-P", "epochs=400", "-P", "early_stopping_patience=0"]


def client_for(project: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def runs_of(client: mlflow.MlflowClient, experiment: str = "agnews-classification"):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing"
    return client.search_runs([exp.experiment_id])


def by_step(runs, step):
    return [r for r in runs if r.data.tags.get("agnews.step") == step]


def write_agnews_csv(path: Path, rows_per_class: int = 60, seed: int = 0) -> Path:
    """Headerless class,title,description rows with the corpus' escapes (" #39;", "\\")."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        for cls, words in WORDS.items():
            for _ in range(rows_per_class):
                title = " ".join(rng.sample(words, 3))
                body = " ".join(rng.sample(words, 4) + rng.sample(FILLER, 3))
                writer.writerow([cls, title.title(), f"it #39;s {body}\\{rng.choice(FILLER)}"])
    return path


def build_tiny_bert(folder: Path, hidden: int = 32, seed: int = 0, layers: int = 2) -> Path:
    """A 2-layer BERT (32 wide by default) with a vocabulary of the fixture's words, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "'", "s", "it", *sorted(
        {w for words in WORDS.values() for w in words} | set(FILLER))]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128, num_labels=4)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def project_copy(dest: Path) -> Path:
    """The repository's tracked files in a fresh folder: `mlflow run` writes graficas/ and mlflow.db there."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server the test starts."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli_env(env: dict | None) -> dict:
    """A clean tracking environment; entry points run `python -m steps...`: this environment's python first."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT"))}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("AGNEWS_PLOTS_DIR", "AGNEWS_LAUNCH_DIR"):  # the CLI sets the launch folder from its own cwd
        full_env.pop(key, None)
    full_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + full_env.get("PATH", "")
    return {**full_env, **(env or {})}


MLFLOW_BIN = str(Path(sys.executable).parent / "mlflow")


def mlflow_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real `mlflow` CLI of this environment, with a clean tracking environment."""
    return subprocess.run([MLFLOW_BIN, *args], cwd=cwd, env=_cli_env(env), capture_output=True, text=True,
                          timeout=timeout)


def start_mlflow_cli(project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`mlflow run . --env-manager local ...` started, not awaited, in its own session (so a signal can reach
    its whole process group, as a terminal's Ctrl-C or a scheduler sends it)."""
    return subprocess.Popen([MLFLOW_BIN, "run", ".", "--env-manager", "local", *args], cwd=project,
                            env=_cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@contextlib.contextmanager
def running_cli(project: Path, *args: str, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """start_mlflow_cli for the body of a `with`; on leaving, a process still alive is killed with its whole group
    (its children included), so a failed assertion leaves no training behind."""
    proc = start_mlflow_cli(project, *args, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def wait_for_epoch(client: mlflow.MlflowClient, experiment: str, proc: subprocess.Popen, count: int = 1,
                   timeout: float = 300) -> list:
    """Until `count` train runs of `experiment` have logged an epoch (a signal then lands mid-training): those runs.
    Fails with the process' stderr if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        exp = client.get_experiment_by_name(experiment)
        trains = by_step(client.search_runs([exp.experiment_id]), "train") if exp else []
        started = [r for r in trains if client.get_metric_history(r.info.run_id, "val_loss")]
        if len(started) >= count:
            return started
        time.sleep(1)
    raise AssertionError(f"training never logged an epoch in {timeout:.0f} s")


def run_step(step: str, *args: str) -> str | None:
    """Run a step's main() in this process against the store of the `store` fixture; the `error:` line or None."""
    import importlib

    module = importlib.import_module(f"steps.{step}")
    try:
        module.main(list(args))
    except SystemExit as exc:
        return str(exc.code)
    finally:
        mlflow.end_run()
    return None


SMALL_SIZES = {"train_size": "80", "val_size": "40", "test_size": "40", "gate_size": "40"}


def step_args(**values) -> list[str]:
    """`--key value` pairs for run_step."""
    return [arg for k, v in values.items() for arg in (f"--{k}", str(v))]


def latest(client: mlflow.MlflowClient, step: str):
    """The newest run of a step in any experiment of the store."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`agnews.step` = '{step}'", order_by=["attributes.start_time DESC"],
                              max_results=1)[0]


def use_this_python(patch: pytest.MonkeyPatch) -> None:
    """Child runs a step starts in-process (main's children, through MLflow's local backend) run `python -m steps...`
    from PATH: this environment's python first, as `mlflow run` in an activated environment has it."""
    patch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))


def forget_active_experiment(patch: pytest.MonkeyPatch) -> None:
    """An earlier test's mlflow.set_experiment (process-global, and MLFLOW_EXPERIMENT_ID) names an experiment id of
    another store: with it, start_run in this store fails ("No Experiment with id=5 exists") when xdist runs the
    two files in one worker."""
    import mlflow.tracking.fluent as fluent

    patch.setattr(fluent, "_active_experiment_id", None)
    patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


@contextlib.contextmanager
def entered_store(project: Path):
    """In-process steps against a project's own SQLite store (cwd, tracking URI, plots folder): its client."""
    patch = pytest.MonkeyPatch()
    patch.chdir(project)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv("AGNEWS_PLOTS_DIR", str(project / "graficas"))
    forget_active_experiment(patch)
    use_this_python(patch)
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow.MlflowClient(uri)
    finally:
        patch.undo()


@contextlib.contextmanager
def project_store(folder: Path, fixture_csv: Path | None = None, **sizes: str):
    """A project copy with its own SQLite store, entered (cwd, tracking URI, plots folder) for in-process steps;
    with `fixture_csv`, data prepared from it first. Yields (project, client, prepare_data run or None)."""
    project = project_copy(folder)
    with entered_store(project) as client:
        data = None
        if fixture_csv is not None:
            assert run_step("prepare_data", *step_args(data=fixture_csv, **(sizes or SMALL_SIZES))) is None
            data = latest(client, "prepare_data")
        yield project, client, data


def wait_for_http(url: str, server: subprocess.Popen, timeout: float, message: str) -> None:
    """Poll `url` until it answers; fail with the server's stderr if it exits, or with `message` after `timeout` s."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            assert time.time() < deadline, message
            time.sleep(1)


@contextlib.contextmanager
def served_model(project: Path, model_uri: str, timeout: float = 180):
    """`mlflow models serve` of a model in the project's store on 127.0.0.1, up and answering /ping: its port."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([MLFLOW_BIN, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host",
                               "127.0.0.1", "-p", str(port)], cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, timeout, f"{model_uri} not served within {timeout} s")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def invoke(port: int, texts: list[str]) -> list[dict]:
    """POST texts to a served model's /invocations; its predictions."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps({"inputs": texts}).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]


# --- a three-class task of two text columns (headline, body) and a label column named topic --------------------

TOPICS = {"política": WORDS[1], "deportes": WORDS[2], "economía y empresas": WORDS[3]}  # non-ASCII, a space


def topic_rows(rows_per_class: int = 20, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"headline": " ".join(rng.sample(words, 3)).title(), "body": " ".join(rng.sample(words, 4)
             + rng.sample(FILLER, 3)) + " café ünïcode", "topic": topic}
            for topic, words in TOPICS.items() for _ in range(rows_per_class)]


def write_jsonl(path, rows: list[dict], opener=open):
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


# --- the hub cache, offline ---------------------------------------------------------------------------------------

TINYBERT_ID = "huawei-noah/TinyBERT_General_4L_312D"  # agnews.training.models.PRESETS["tinybert"].checkpoint


def populate_hf_cache(hf_home: Path, repo_id: str, model_folder: Path) -> Path:
    """The layout huggingface_hub reads offline: models--owner--name/{refs/main, snapshots/<sha>/...}."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return repo
