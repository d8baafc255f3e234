"""The tests' in-distribution predict batches over many seeds, in fp32 and bf16: how far from `drift` they are.

tests/steps/test_monitor.py and tests/steps/test_predict.py each assert that one batch of held-out rows of the fixture's
generator is `ok`. Such an assertion is only as good as its margin: the batch is one draw, and the model it is
checked with is trained in bf16 on an AVX512-BF16/AMX machine but in fp32 on an AVX2-only one (`precision=auto`).
For each test's fixture and each precision (train, evaluate and predict all forced to it, one torch thread as under
pytest-xdist) this trains the fixture's model exactly as the test does (the same helpers, in-process steps, a
fresh store), then predicts the test's own batch and `--seeds` more batches drawn the same way (generator seeds
100, 101, ...) and reports, per fixture and precision, how many were `ok` and each batch's smallest raw p over the
statistics (drift needs a Holm-adjusted p <= alpha = 0.01, i.e. a raw p <= 0.01 / 7 for the smallest of 7
statistics). Replaces its section of benchmarks/RESULTS.md.

    python benchmarks/bench_monitor_tests.py             # 30 more seeds, fp32 and bf16 (~2 min on 2 cores)
    python benchmarks/bench_monitor_tests.py --seeds 5 --precisions fp32
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as under pytest-xdist (conftest): the numerics of a CI run

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from results_md import write_section  # noqa: E402

from agnews import hardware, vocab  # noqa: E402
from tests import helpers  # noqa: E402  (the tests' own builders: the same fixture data and models)
from tests.steps import test_monitor, test_predict  # noqa: E402  (each test's own batch)

HEADING = "# Monitoring benchmark: the tests' in-distribution batches"
log = logging.getLogger("bench_monitor_tests")


@dataclass
class Fixture:
    """One test's model and batch: how it trains, whether evaluate records the reference, how a batch is drawn."""

    name: str
    test_seed: int
    model: dict  # build_tiny_bert keyword arguments
    train: dict  # train step arguments
    evaluate: bool  # False: the first predict run computes the reference (test_predict: never evaluated)
    write_batch: object  # (path, seed) -> input file


FIXTURES = [
    Fixture("test_monitor.py (held_out: 80 rows, 4-layer 128-wide model, reference recorded by evaluate)", 7,
            {"hidden": 128, "layers": 4}, {"epochs": 3, "learning_rate": "1e-3", "batch_size": 8, "seed": 1}, True,
            lambda path, seed: test_monitor._labelled_csv(path, seed=seed)),
    Fixture("test_predict.py (in-distribution batch, 2-layer 32-wide model, reference computed by predict)",
            test_predict.IN_DISTRIBUTION_SEED, {}, {"epochs": 3, "learning_rate": 0.01, "batch_size": 8, "seed": 1},
            False, lambda path, seed: test_predict.in_distribution_csv(path, seed)),
]


def _smallest_p(run) -> tuple[float, str]:
    """The smallest raw p of a predict run's statistics (Holm multiplies it by the statistics tested, 7, before it
    meets alpha: drift needs a raw p <= 0.01 / 7 = 0.0014), and which statistic it was."""
    values = {k[len("monitor_"):-len("_p")]: v for k, v in run.data.metrics.items()
              if k.endswith("_p") and np.isfinite(v)}
    name = min(values, key=values.get)
    return values[name], name


def _fixture_runs(fixture: Fixture, precision: str, seeds: list[int], folder: Path
                  ) -> list[tuple[int, str, float, str]]:
    """(seed, health, smallest raw p, its statistic) per batch, the test's seed first."""
    model = helpers.build_tiny_bert(folder / "tiny", **fixture.model)
    fixture_csv = helpers.write_agnews_csv(folder / "agnews_fixture.csv")
    out = []
    with helpers.project_store(folder / "project", fixture_csv) as (_, client, data_run):
        assert helpers.run_step("train", *helpers.step_args(model=model, data_run_id=data_run.info.run_id,
                                                              precision=precision, **fixture.train)) is None
        train = helpers.latest(client, "train")
        if fixture.evaluate:
            assert helpers.run_step("evaluate", *helpers.step_args(train_run_id=train.info.run_id, int8="false",
                                                                     precision=precision)) is None
        uri = f"models:/agnews-classifier/{train.data.tags[vocab.REGISTERED_VERSION]}"
        for seed in seeds:
            path = fixture.write_batch(folder / f"batch_{seed}.csv", seed)
            message = helpers.run_step("predict", *helpers.step_args(input=path, model_uri=uri, precision=precision))
            assert message is None, message
            run = helpers.latest(client, "predict")
            out.append((seed, run.data.tags[vocab.HEALTH], *_smallest_p(run)))
            log.info("%s %s seed %d: %s, smallest raw p %.3g (%s)", fixture.name[:15], precision, seed, *out[-1][1:])
    return out


def _row(fixture: Fixture, precision: str, results: list[tuple[int, str, float, str]]) -> str:
    test_seed, others = results[0], results[1:]
    ok = sum(health == "ok" for _, health, _, _ in others)
    smallest = min(others, key=lambda r: r[2])
    return (f"| {fixture.name} | {precision} | seed {test_seed[0]}: **{test_seed[1]}**, {test_seed[2]:.3g} "
            f"({test_seed[3]}) | {ok} of {len(others)} | {np.median([r[2] for r in others]):.3g} | "
            f"{smallest[2]:.3g} ({smallest[3]}, seed {smallest[0]}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=30, help="batches drawn besides the test's own")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("steps").setLevel(logging.WARNING)
    started, load_start = time.perf_counter(), os.getloadavg()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    rows = []
    for fixture in FIXTURES:
        seeds = [fixture.test_seed, *range(100, 100 + args.seeds)]
        for precision in precisions:
            with tempfile.TemporaryDirectory(prefix="bench-monitor-tests-") as tmp:
                rows.append(_row(fixture, precision, _fixture_runs(fixture, precision, seeds, Path(tmp))))
    lines = [HEADING, "",
             "Generated by `python benchmarks/bench_monitor_tests.py" + "".join(f" {a}" for a in sys.argv[1:])
             + f"` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {hardware.cpu_description()}, "
             f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; the run took "
             f"{(time.perf_counter() - started) / 60:.1f} min, load average (1 min) {load_start[0]:.2f} at start and "
             f"{os.getloadavg()[0]:.2f} at end.", "",
             "Each test's model trained, evaluated (where the test does) and predicting in one precision (fp32 is what "
             "an AVX2-only machine runs with `precision=auto`); its own batch, then batches drawn the same way from "
             f"generator seeds 100-{99 + args.seeds}. A batch is `drift` when a statistic's Holm-adjusted p is "
             "<= 0.01: for the smallest of the 7 raw p-values, when it is <= 0.01 / 7 = 0.0014.",
             "", "| test (batch) | precision | the test's batch: health, smallest raw p (statistic) | other seeds "
                 "ok | median smallest raw p | smallest (statistic, seed) |", "|---|---|---|---|---|---|", *rows, ""]
    print("\n".join(lines))
    write_section(Path(args.out), HEADING, lines)


if __name__ == "__main__":
    main()
