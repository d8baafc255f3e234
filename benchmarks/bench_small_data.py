"""Good at any size: the default recipe (epochs=0, auto: scheduled by optimizer steps) against the old default
(3 epochs) and a grid of {3, 6, 12, 24} epochs with early stopping, on tasks cut from the shipped AG News file.

Tasks (train rows; validation drawn like a user's split; test rows fixed per task, >= 400, balanced):
  4c-100, 4c-300, 4c-1000   the 4 classes at 100, 300 and 1000 training rows
  3c-120, 3c-360            World, Business, Sci/Tech at 120 and 360 rows (issue 24's own-data case)
  2c-200                    Business vs Sci/Tech (the most confused pair) at 200 rows
  4c-imbalanced             250 / 100 / 50 / 25 rows (one class 10x the rarest)
Each (task, seed) draws its own train/validation rows (seed) and trains every recipe from the same model; the
model's preset learning rate, batch 16, early stopping after 2 epochs without a better validation macro F1 (the
pipeline's defaults). Validation picks the epoch; test only reports: macro F1 mean over seeds, its 95% bootstrap
interval over all (seed, row) pairs, and the paired difference of the default to the best grid entry.

    python benchmarks/bench_small_data.py                        # all tasks, 3 seeds, minilm
    python benchmarks/bench_small_data.py --tasks 3c-120 --seeds 0 --recipes auto,e3 --workers 1
    python benchmarks/bench_small_data.py --model /path/to/minilm --workers 8 --json out.json  # e.g. on a GPU

It writes its section of benchmarks/RESULTS.md (--no-write to skip) with the command and the machine."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_md import write_section  # noqa: E402  (benchmarks/, the script's own folder)

from agnews import stats  # noqa: E402
from agnews.data import ag_news  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "ag_news" / "test.csv.gz"
TITLE = "# Small data: the default recipe at every size (bench_small_data.py)"
TEST_SEED = 1234
log = logging.getLogger("bench_small_data")


@dataclass(frozen=True)
class TaskSpec:
    classes: tuple[int, ...]  # AG News class ids (0 World, 1 Sports, 2 Business, 3 Sci/Tech)
    train: tuple[int, ...]  # rows per class
    validation: tuple[int, ...]
    test_per_class: int


TASKS = {
    "4c-100": TaskSpec((0, 1, 2, 3), (25,) * 4, (25,) * 4, 100),
    "4c-300": TaskSpec((0, 1, 2, 3), (75,) * 4, (50,) * 4, 100),
    "4c-1000": TaskSpec((0, 1, 2, 3), (250,) * 4, (125,) * 4, 125),
    "3c-120": TaskSpec((0, 2, 3), (40,) * 3, (30,) * 3, 160),
    "3c-360": TaskSpec((0, 2, 3), (120,) * 3, (40,) * 3, 160),
    "2c-200": TaskSpec((2, 3), (100,) * 2, (50,) * 2, 200),
    "4c-imbalanced": TaskSpec((0, 1, 2, 3), (250, 100, 50, 25), (125, 50, 25, 12), 100),
}
RECIPES = {"auto": {"epochs": 0}, "e3": {"epochs": 3}, "e6": {"epochs": 6}, "e12": {"epochs": 12},
           "e24": {"epochs": 24}, "probe": {}}  # probe: the linear probe (probe:<model>) on the frozen encoder
GRID = ("e3", "e6", "e12", "e24")
OLD_DEFAULT = "e3"  # the default until 2026-12: 3 epochs


def load_rows() -> pd.DataFrame:
    raw = pd.read_csv(DATA, header=None, names=["cls", "title", "description"], dtype=str, keep_default_na=False)
    text = (raw["title"] + " " + raw["description"]).map(ag_news.unescape).str.strip()
    return pd.DataFrame({"text": text, "ag_label": raw["cls"].astype(int) - 1}).drop_duplicates("text")


def _take(frame: pd.DataFrame, spec_counts: tuple[int, ...], classes: tuple[int, ...], seed: int) -> pd.DataFrame:
    parts = [frame[frame["ag_label"] == c].sample(n=n, random_state=seed) for c, n in zip(classes, spec_counts)]
    return pd.concat(parts)


def task_splits(rows: pd.DataFrame, spec: TaskSpec, seed: int) -> dict[str, pd.DataFrame]:
    """Test fixed per task (TEST_SEED); train and validation drawn by `seed` from the rest; labels 0..k-1."""
    pool = rows[rows["ag_label"].isin(spec.classes)]
    test = _take(pool, (spec.test_per_class,) * len(spec.classes), spec.classes, TEST_SEED)
    rest = pool.drop(test.index)
    train = _take(rest, spec.train, spec.classes, seed)
    validation = _take(rest.drop(train.index), spec.validation, spec.classes, seed + 1)
    relabel = {c: k for k, c in enumerate(spec.classes)}
    return {name: frame.assign(label=frame["ag_label"].map(relabel))[["text", "label"]].reset_index(drop=True)
            for name, frame in (("train", train), ("validation", validation), ("test", test))}


def run_job(job: tuple[str, int, str, str, str]) -> dict:
    """One (task, seed, recipe): fine-tune from the pretrained model (or fit the probe), predict the test rows."""
    from agnews.data.task import Task
    from agnews.training import fine_tune, models

    task_name, seed, recipe, model_name, precision = job
    if recipe == "probe":
        return _probe_job(task_name, seed, model_name, precision)
    spec = TASKS[task_name]
    splits = task_splits(load_rows(), spec, seed)
    names = tuple(ag_news.LABELS[c] for c in spec.classes)
    model_spec = models.resolve_model(model_name)
    tokenizer, model = models.load_tokenizer_and_model(model_spec, Task(names))
    model = model.float()  # a folder of fp16 weights (carried to a GPU machine) trains from fp32 master weights
    config = fine_tune.TrainConfig(learning_rate=model_spec.default_learning_rate, seed=seed, precision=precision,
                                  **RECIPES[recipe])
    start = time.perf_counter()
    result = fine_tune.train(model, tokenizer, splits["train"], splits["validation"], config)
    seconds = time.perf_counter() - start
    logits = fine_tune.predict_logits(model, tokenizer, splits["test"]["text"].tolist(), config)
    return {"task": task_name, "seed": seed, "recipe": recipe, "epochs_planned":
            fine_tune.planned_epochs(config, len(splits["train"]), rarest=fine_tune.rarest_class(splits["train"])),
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch, "train_seconds": seconds, "precision": result.precision,
            "labels": splits["test"]["label"].tolist(), "predicted": logits.argmax(axis=1).tolist(),
            "machine": _machine()}


def _probe_job(task_name: str, seed: int, model_name: str, precision: str) -> dict:
    """probe:<model> as train runs it: embed with the frozen encoder, C chosen on validation, predict the test rows."""
    from agnews import hardware
    from agnews.data.task import Task
    from agnews.training import models, probe

    spec = TASKS[task_name]
    splits = task_splits(load_rows(), spec, seed)
    names = tuple(ag_news.LABELS[c] for c in spec.classes)
    tokenizer, encoder = models.load_encoder(models.resolve_model(f"probe:{model_name}"), Task(names))
    encoder = encoder.float()
    resolved = hardware.resolve_precision(precision)
    start = time.perf_counter()
    x = {k: probe.embed(encoder, tokenizer, v["text"].tolist(), 128, 32, resolved) for k, v in splits.items()}
    fitted = probe.fit(x["train"], splits["train"]["label"].to_numpy(), x["validation"],
                       splits["validation"]["label"].to_numpy(), len(names), seed=seed)
    seconds = time.perf_counter() - start  # embedding the test rows included
    return {"task": task_name, "seed": seed, "recipe": "probe", "epochs_planned": 1, "epochs_run": 1,
            "best_epoch": 1, "train_seconds": seconds, "precision": resolved,
            "labels": splits["test"]["label"].tolist(), "predicted": fitted.logits(x["test"]).argmax(axis=1).tolist(),
            "machine": _machine()}


def _pooled(jobs: list[dict], task: str, recipe: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    mine = sorted((j for j in jobs if j["task"] == task and j["recipe"] == recipe), key=lambda j: j["seed"])
    if not mine:
        return np.array([], int), np.array([], int), []
    return (np.concatenate([j["labels"] for j in mine]), np.concatenate([j["predicted"] for j in mine]), mine)


def _f1(job: dict, classes: int) -> float:
    return stats.score("f1_macro", np.asarray(job["labels"]), np.asarray(job["predicted"]), classes)


def summary(jobs: list[dict], tasks: list[str], recipes: list[str]) -> list[dict]:
    rows = []
    for task in tasks:
        classes = len(TASKS[task].classes)
        for recipe in recipes:
            labels, predicted, mine = _pooled(jobs, task, recipe)
            if not mine:
                continue
            low, high = stats.bootstrap_ci(labels, predicted, "f1_macro", classes=classes)
            f1s = [_f1(j, classes) for j in mine]
            rows.append({"task": task, "recipe": recipe, "seeds": len(mine), "f1_mean": float(np.mean(f1s)),
                         "f1_std": float(np.std(f1s)), "ci_low": low, "ci_high": high,
                         "epochs_planned": mine[0]["epochs_planned"],
                         "epochs_run": float(np.mean([j["epochs_run"] for j in mine])),
                         "seconds": float(np.mean([j["train_seconds"] for j in mine])),
                         "machine": mine[0].get("machine", "")})
    return rows


def verdicts(jobs: list[dict], table: list[dict], tasks: list[str]) -> list[dict]:
    """Per task: the default against the best grid entry (by mean test macro F1) and against the old default,
    paired over every (seed, test row)."""
    out = []
    for task in tasks:
        classes = len(TASKS[task].classes)
        grid = [r for r in table if r["task"] == task and r["recipe"] in GRID]
        if not grid or not any(r["task"] == task and r["recipe"] == "auto" for r in table):
            continue
        best = max(grid, key=lambda r: r["f1_mean"])
        labels, auto, _ = _pooled(jobs, task, "auto")
        row = {"task": task, "best_grid": best["recipe"]}
        for name, other in (("best", best["recipe"]), ("old", OLD_DEFAULT), ("probe", "probe")):
            _, theirs, mine = _pooled(jobs, task, other)
            if mine:
                paired = stats.paired(labels, auto, theirs, "f1_macro", classes=classes)
                row.update({f"vs_{name}": paired.delta, f"vs_{name}_low": paired.ci_low,
                            f"vs_{name}_high": paired.ci_high})
        out.append(row)
    return out


def _machine() -> str:
    import torch

    from agnews import hardware

    gpu = hardware.gpu_description()
    return f"{gpu} (CUDA, torch {torch.__version__})" if gpu != "none" else hardware.cpu_description()


def render(table: list[dict], verdict: list[dict], command: str, machine: str, wall_s: float) -> list[str]:
    lines = [TITLE, "", f"`{command}` on {machine}, {dt.date.today()}, {wall_s / 60:.1f} min in all. MiniLM "
             "(all-MiniLM-L6-v2), preset learning rate, batch 16, early stopping patience 2; test macro F1: mean "
             "over seeds ± std, [95% bootstrap interval over all (seed, row) pairs]; `epochs` planned / run (mean); "
             "`s`: mean training seconds per run on that machine (not a CPU figure).", "",
             "| task | recipe | macro F1 | interval | epochs planned / run | s |", "|---|---|---|---|---|---|"]
    machines = sorted({r["machine"] for r in table if r.get("machine")})
    for r in table:
        name = {"auto": "**default (auto)**", "e3": "3 epochs (old default)",
                "probe": "linear probe (probe:minilm)"}.get(r["recipe"], r["recipe"])
        if len(machines) > 1:  # rows from two runs: say which machine each one's seconds are from
            name += f" ({r['machine'].split(' (')[0].split(';')[0]})"
        lines.append(f"| {r['task']} | {name} | {r['f1_mean']:.4f} ± {r['f1_std']:.4f} | "
                     f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}] | {r['epochs_planned']} / {r['epochs_run']:.1f} | "
                     f"{r['seconds']:.1f} |")
    lines += ["", "The default against the best grid entry and against the old default (paired Δ macro F1 over "
              "every seed and test row, 95% interval; 'not significant' when it holds 0):", "",
              "| task | best grid | default − best | default − old default | default − probe |",
              "|---|---|---|---|---|"]
    for v in verdict:
        cells = [_delta(v, "best"), _delta(v, "old"), _delta(v, "probe")]
        lines.append(f"| {v['task']} | {v['best_grid']} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return lines + [""]


def _delta(v: dict, name: str) -> str:
    if f"vs_{name}" not in v:
        return ""
    low, high = v[f"vs_{name}_low"], v[f"vs_{name}_high"]
    note = "not significant" if low <= 0 <= high else "significant"
    return f"{v[f'vs_{name}']:+.4f} [{low:+.4f}, {high:+.4f}] {note}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="minilm", help="a preset, hub id or folder (MiniLM ships offline)")
    parser.add_argument("--workers", type=int, default=1, help="processes at once (a GPU takes several)")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (fp32: what an AVX2 CPU trains in)")
    parser.add_argument("--merge", default="", help="a --json file whose runs of other (task, recipe) pairs join "
                                                    "this run's table (e.g. fine-tunes from a GPU, probes from here)")
    parser.add_argument("--json", default="", help="also write every run's predictions here")
    parser.add_argument("--from-json", default="", help="render a --json file of an earlier run (e.g. from a GPU "
                                                       "machine) instead of training")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    tasks, recipes = args.tasks.split(","), args.recipes.split(",")
    unknown = [t for t in tasks if t not in TASKS] + [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"error: unknown task or recipe {', '.join(unknown)}; tasks: {', '.join(TASKS)}; recipes: "
                         f"{', '.join(RECIPES)}")
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        return _report(saved["jobs"], tasks, recipes, saved["command"], saved["machine"], saved["wall_s"], args)
    jobs = [(t, int(s), r, args.model, args.precision) for t in tasks for s in args.seeds.split(",") for r in recipes]
    # the longest first, so the workers end together
    jobs.sort(key=lambda j: -sum(TASKS[j[0]].train) * (RECIPES[j[2]].get("epochs", 1) or 8))
    start = time.perf_counter()
    if args.workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // args.workers)))
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            done = []
            for k, result in enumerate(pool.imap_unordered(run_job, jobs), start=1):
                log.info("%d/%d done: %s seed %s %s (%.1f s)", k, len(jobs), result["task"], result["seed"],
                         result["recipe"], result["train_seconds"])
                done.append(result)
    else:
        done = [run_job(job) for job in jobs]
    wall = time.perf_counter() - start
    command = "python benchmarks/bench_small_data.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    machine = _machine()
    if args.merge:  # another run's rows for the pairs this one did not run, each job keeping its own machine
        saved = json.loads(Path(args.merge).read_text())
        ran = {(j["task"], j["recipe"]) for j in done}
        done += [{"machine": saved["machine"], **j} for j in saved["jobs"] if (j["task"], j["recipe"]) not in ran]
        command = f"{saved['command']}` on {saved['machine']}; then `{command}"
        tasks = [t for t in TASKS if any(j["task"] == t for j in done)]
        recipes = [r for r in RECIPES if any(j["recipe"] == r for j in done)]
        wall += saved["wall_s"]
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "machine": machine, "wall_s": wall,
                                               "jobs": done}))
    _report(done, tasks, recipes, command, machine, wall, args)


def _report(done: list[dict], tasks, recipes, command: str, machine: str, wall: float, args) -> None:
    table = summary(done, tasks, recipes)
    lines = render(table, verdicts(done, table, tasks), command, machine, wall)
    print("\n".join(lines))
    if not args.no_write:
        write_section(HERE / "RESULTS.md", TITLE, lines)


if __name__ == "__main__":
    main()
