"""The monitoring issue's done criterion, end to end through the real `mlflow run` CLI on real AG News rows.

In a fresh folder (a copy of the repository, its own SQLite store): prepare_data from the shipped test split
(1000 / 500 / 500 rows, no gate), train MiniLM for one epoch, evaluate (which records the reference), set the
version `champion`, then three predict runs against the champion: 200 held-out AG News rows (labelled), 200 Sports
rows only, and 200 lines of this project's Python code (another domain); then `-e monitor`. Prints each predict
run's health, reasons and reference, and the monitor run's id and alarm; the figures land in <folder>/graficas/.

    python benchmarks/monitor_demo.py /tmp/monitor-demo
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from agnews import vocab  # noqa: E402
from agnews.data.reading import clean_texts  # noqa: E402

MODEL = "agnews-classifier"


def _copy(folder: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((REPO / name).read_bytes())


def _mlflow_run(folder: Path, entry: str, **params: str) -> None:
    args = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "--env-manager", "local", "-e", entry]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items()  # the store and plots folder of `folder`, not of this process
           if k not in ("MLFLOW_TRACKING_URI", "AGNEWS_LAUNCH_DIR", "AGNEWS_PLOTS_DIR")}
    start = time.perf_counter()
    result = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
    print(f"{entry} {params}: exit {result.returncode} in {time.perf_counter() - start:.0f} s", flush=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])


def _latest(client: mlflow.MlflowClient, step: str):
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`{vocab.STEP}` = '{step}'", order_by=["attributes.start_time DESC"],
                              max_results=1)[0]


def _inputs(folder: Path, client: mlflow.MlflowClient) -> dict[str, Path]:
    """Held-out rows (not in any split of the data run), Sports rows only, and code lines."""
    raw = pd.read_csv(REPO / "data" / "ag_news" / "test.csv.gz", header=None, names=["cls", "title", "description"])
    raw["text"] = clean_texts(raw["title"] + " " + raw["description"], "ag_news")
    data_run = _latest(client, "prepare_data").info.run_id
    local = Path(mlflow.artifacts.download_artifacts(run_id=data_run, artifact_path="data",
                                                     tracking_uri=client.tracking_uri))
    used = set(pd.concat([pd.read_parquet(local / f"{split}.parquet") for split in ("train", "validation", "test")])
               ["text"])  # not unlabeled.parquet: those rows the model never saw
    held = raw[~raw["text"].isin(used)]
    code = [line.strip() for path in sorted((REPO / "agnews").glob("*.py"))
            for line in path.read_text().splitlines() if len(line.strip()) > 40][:200]
    frames = {"held_out": held.sample(200, random_state=1),
              "sports_only": held[held["cls"] == 2].sample(200, random_state=2),
              "code": pd.DataFrame({"text": code})}
    paths = {}
    for name, frame in frames.items():
        paths[name] = folder / f"{name}.csv"
        if "cls" in frame:
            frame = pd.DataFrame({"text": frame["text"], "label": frame["cls"] - 1})
        frame.to_csv(paths[name], index=False)
    return paths


def _champion(folder: Path, client: mlflow.MlflowClient) -> None:
    _copy(folder)
    _mlflow_run(folder, "prepare_data", data="data/ag_news/test.csv.gz", train_size="1000", val_size="500",
                test_size="500", gate_size="0")
    _mlflow_run(folder, "train", model="minilm", data_run_id=_latest(client, "prepare_data").info.run_id, epochs="1")
    train = _latest(client, "train")
    _mlflow_run(folder, "evaluate", train_run_id=train.info.run_id, int8="false")
    client.set_registered_model_alias(MODEL, vocab.CHAMPION, train.data.tags[vocab.REGISTERED_VERSION])


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/monitor-demo").resolve()
    trained = (folder / "mlflow.db").exists()  # a previous run of this script trained the champion already
    folder.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    if not trained:
        _champion(folder, client)
    for name, path in _inputs(folder, client).items():
        _mlflow_run(folder, "predict", input=str(path))
        run = _latest(client, "predict")
        print(f"  {name}: {run.data.tags[vocab.HEALTH]} ({run.data.tags.get(vocab.HEALTH_REASONS) or '-'}); "
              f"accuracy {run.data.metrics.get('accuracy', float('nan')):.3f}; "
              f"{run.data.tags.get(vocab.REFERENCE_MATCH, '?')} reference: "
              f"{run.data.tags.get(vocab.REFERENCE_NOTE, '-')}", flush=True)
    _mlflow_run(folder, "monitor")
    monitor = _latest(client, "monitor")
    print(f"monitor run {monitor.info.run_id}: latest {monitor.data.tags[vocab.HEALTH]}; "
          f"{monitor.data.tags.get(vocab.HEALTH_ALARM, '')}; figures: "
          f"{', '.join(sorted(p.name for p in (folder / 'graficas').glob('monitor_*.png')))}")


if __name__ == "__main__":
    main()
