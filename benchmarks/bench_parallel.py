"""`main` at -P parallel=1 and -P parallel=2, side by side in one run, and on paper a 4-GPU node and a 10-node
cluster running 3 models x 5 seeds from the per-run times measured here.

Not a test. Two random-init architectures (TinyBERT and BERT-Mini configs, the uncased vocabulary; what they cost
is what the pretrained weights cost) on real AG News rows; each setting is a fresh `mlflow run . -e main` in its
own project copy and store (`-P reuse=false`), so neither reuses the other's runs.

    python benchmarks/bench_parallel.py                     # writes benchmarks/PARALLEL.md
    python benchmarks/bench_parallel.py --train_size 200 --epochs 1 --out /tmp/p.md   # a smoke run (minutes)

On paper: each of the 15 chains (a train, then its evaluate) takes the mean chain time its model took here at
parallel=1; chains go, in order, to the first free slot (4 for the GPU node, 10 for the cluster, one chain per
GPU or node); prepare_data before and compare after run alone. A GPU would shorten every run, a node's job start
adds seconds: the figures show the schedule's shape at this machine's per-run speed, nothing more."""
from __future__ import annotations

import argparse
import datetime as dt
import heapq
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

import mlflow

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO / "data" / "ag_news" / "test.csv.gz"
sys.path.insert(0, str(REPO))
from agnews import vocab  # noqa: E402


def build_models(folder: Path) -> list[Path]:
    from bench_train import ARCHS, uncased_tokenizer

    tokenizer = uncased_tokenizer()
    paths = []
    for arch in ("TinyBERT", "BERT-Mini"):
        path = folder / arch.lower()
        ARCHS[arch]().save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


def project_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def run_main(project: Path, models: list[Path], args: argparse.Namespace, parallel: int) -> dict:
    """One `main`; its wall time and every child's (step, model, seconds, start, end)."""
    params = {"models": ",".join(map(str, models)), "seeds": args.seeds, "parallel": parallel, "data": DATA,
              "train_size": args.train_size, "val_size": args.train_size // 2, "test_size": args.train_size // 2,
              "gate_size": args.train_size // 2, "epochs": args.epochs, "int8": "false", "reuse": "false"}
    command = [str(Path(sys.executable).parent / "mlflow"), "run", ".", "--env-manager", "local",
               *[a for k, v in params.items() for a in ("-P", f"{k}={v}")]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"main at parallel={parallel} failed:\n{result.stderr[-3000:]}")
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [{"step": r.data.tags.get(vocab.STEP), "model": Path(r.data.params.get("model", "")).name,
                 "seconds": (r.info.end_time - r.info.start_time) / 1000, "start": r.info.start_time / 1000,
                 "end": r.info.end_time / 1000} for r in runs if r.data.tags.get(vocab.STEP) != vocab.MAIN]
    trains = sorted((c for c in children if c["step"] == "train"), key=lambda c: c["start"])
    overlap = sum(max(0.0, min(a["end"], b["end"]) - max(a["start"], b["start"]))
                  for k, a in enumerate(trains) for b in trains[k + 1:])
    return {"parallel": parallel, "wall": wall, "children": children, "train_overlap": overlap}


def makespan(chains: list[float], slots: int, before: float, after: float) -> float:
    """Chains in order, each to the first free slot; serial steps before and after."""
    free = [0.0] * slots
    for seconds in chains:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return before + max(free) + after


def on_paper(measured: dict, models: int = 3, seeds: int = 5) -> dict[str, float]:
    """3 models x 5 seeds from parallel=1's per-run times: each model's mean chain, the third model a repeat of the
    slowest measured one (the benchmark measures two architectures)."""
    children = measured["children"]
    per_model = {}
    for model in {c["model"] for c in children if c["step"] == "train"}:
        train = mean(c["seconds"] for c in children if c["step"] == "train" and c["model"] == model)
        per_model[model] = train
    evaluate = mean(c["seconds"] for c in children if c["step"] == "evaluate")
    chain_times = sorted((t + evaluate for t in per_model.values()), reverse=True)
    chain_times = (chain_times + chain_times[:1] * models)[:models]
    chains = [t for t in chain_times for _ in range(seeds)]
    before = sum(c["seconds"] for c in children if c["step"] == "prepare_data")
    after = sum(c["seconds"] for c in children if c["step"] == "compare")
    return {"one after the other (parallel=1)": makespan(chains, 1, before, after),
            "4-GPU node (parallel=4)": makespan(chains, 4, before, after),
            "10-node cluster (parallel=10)": makespan(chains, 10, before, after),
            "chains": len(chains), "mean_chain": mean(chains)}


def write(out: Path, args, results: list[dict], paper: dict, minutes: float) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [f"# main at parallel=1 and parallel=2 ({dt.date.today()})", "",
             f"`python benchmarks/bench_parallel.py --train_size {args.train_size} --epochs {args.epochs} "
             f"--seeds {args.seeds} --order {args.order}`, {minutes:.1f} min (settings in that order); "
             f"{os.cpu_count()} CPUs ({cpu}); load average at the end "
             f"{os.getloadavg()[0]:.1f}; 2 models (TinyBERT, BERT-Mini architectures, random init) x seeds "
             f"{args.seeds}, int8 off.", "",
             "| parallel | main wall s | train runs s (sum) | evaluate runs s (sum) | train overlap s |",
             "|---|---|---|---|---|"]
    for r in results:
        by = {step: sum(c["seconds"] for c in r["children"] if c["step"] == step) for step in ("train", "evaluate")}
        lines.append(f"| {r['parallel']} | {r['wall']:.0f} | {by['train']:.0f} | {by['evaluate']:.0f} | "
                     f"{r['train_overlap']:.0f} |")
    wall = {r["parallel"]: r["wall"] for r in results}
    one, two = wall[1], wall[2]
    lines += ["", f"parallel=2 / parallel=1 wall time: {two / one:.2f} (each child of parallel=2 has half the torch "
              "threads; on 2 cores the work is the same, so expect little).", "",
              f"On paper, 3 models x 5 seeds ({paper['chains']} chains of {paper['mean_chain']:.0f} s on average, "
              "from parallel=1's per-run times here):", "", "| where | hours |", "|---|---|"]
    lines += [f"| {k} | {v / 3600:.2f} |" for k, v in paper.items() if k not in ("chains", "mean_chain")]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--order", default="1,2", help="the parallel settings in the order they run (2,1: the "
                        "other order, to see what running first costs: cold file caches)")
    parser.add_argument("--out", default=str(HERE / "PARALLEL.md"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        models = build_models(Path(tmp) / "models")
        results = [run_main(project_copy(Path(tmp) / f"p{n}"), models, args, n)
                   for n in map(int, args.order.split(","))]
    paper = on_paper(next(r for r in results if r["parallel"] == 1))
    write(Path(args.out), args, results, paper, (time.perf_counter() - started) / 60)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
