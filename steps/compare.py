"""compare: table the models trained under one parent (or `run_ids`) with intervals and paired tests, plot them,
and run the champion/challenger gate: the candidate takes `champion` only when the gate rows support it."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import mlflow

from agnews import hardware, params, values, vocab
from agnews.data import handoff, lineage
from agnews.decide import comparison, gate, plots, promotion, report
from agnews.errors import PipelineError
from agnews.runs import lifecycle, staging
from agnews.serving import classifiers
from agnews.serving.costs import cost as measure_cost

log = logging.getLogger("steps.compare")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--run_ids", default="", help="comma list of train/evaluate run ids; default: siblings")
    parser.add_argument("--registered_model", type=values.registered_model_name, default="agnews-classifier")
    params.add_gate_arguments(parser)
    params.add_int8_tolerance(parser)
    return parser.parse_args(argv)


def _tables(args: argparse.Namespace):
    trains, evals = comparison.find_runs(args.run_ids)
    if not trains:
        raise PipelineError("no finished train runs to compare; run train first or pass -P run_ids=<ids>")
    wrong = {r.data.tags.get(vocab.REGISTERED_MODEL) for r in trains} - {args.registered_model}
    if wrong:
        raise PipelineError(f"runs registered into {sorted(map(str, wrong))}, not {args.registered_model!r}; "
                            "pass -P registered_model=<their registered model>")
    task = comparison.shared_task(trains)  # different label sets: refused before anything is read or logged
    predictions = {r.info.run_id: comparison.validation_predictions(r) for r in trains}
    comparison.check_same_rows(trains, predictions)
    evaluations = comparison.chosen_evaluations(trains, evals, *comparison.own_parent())
    runs = comparison.run_table(trains, evaluations, predictions)
    ranked = comparison.add_paired_columns(comparison.model_table(runs), predictions)
    return runs, ranked, predictions, evaluations, task


def _timed_alike(costs, ranked, args):
    """Under a latency budget, every candidate timed again here, one at a time after the trainings, on the test texts
    of their (shared) data run: evaluate timed each at its own moment, beside sibling trainings or on another node."""
    data_run = mlflow.get_run(ranked.iloc[0]["train_run_id"]).data.tags[vocab.DATA_RUN_ID]
    texts = handoff.load_splits(data_run, ("test",))["test"]["text"].tolist()
    threads = hardware.configure_threads()

    def timer(version: str) -> dict:
        with classifiers.load(f"models:/{args.registered_model}/{version}") as model:
            return {**measure_cost(model, texts), "compute": getattr(model, "precision", "")}

    conditions = f"compare on {hardware.cpu_description()}, {threads} thread(s), one model at a time"
    log.info("timing %d models and variants for the latency budget (%s)", len(costs), conditions)
    return comparison.retimed(costs, timer, conditions, args.latency_budget_ms)


def _over_budget_reason(row, costs, budget: float) -> str:
    latency = comparison.fp32_latency(costs)[row.train_run_id]
    return f"p50 latency {latency:.1f} ms is over the budget of {budget:g} ms (-P latency_budget_ms)"


def _decide(args: argparse.Namespace, candidate, ranked) -> gate.Decision:
    """Score the candidate and the incumbent on gate rows neither saw, and apply the promotion rule."""
    incumbent = gate.version_by_alias(args.registered_model, gate.CHAMPION)
    rows = None
    if incumbent is not None and str(incumbent.version) != candidate.registered_version:
        rows = gate.rows_for(mlflow.get_run(candidate.train_run_id), incumbent, args.gate_data_run_id)
    scorer = lambda version: lambda texts: classifiers.predict_registered(args.registered_model, version, texts)  # noqa: E731
    probe = _probe_row(ranked, candidate)
    bar = gate.Bar(str(probe.registered_version), probe.model, scorer(str(probe.registered_version))) if probe else None
    if probe is not None and rows is not None and rows.rows is not None:  # nor rows the probe trained or chose on
        kept, more = lineage.unseen(rows.rows, lineage.seen_rows(mlflow.get_run(probe.train_run_id)) or set())
        rows.rows, rows.excluded = kept, rows.excluded + more
    return gate.decide(candidate.registered_version, candidate.model, incumbent, rows,
                       scorer(candidate.registered_version), scorer(str(incumbent.version) if incumbent else ""),
                       args.min_improvement, args.min_gate_rows, min_per_class=args.min_gate_rows_per_class, bar=bar)


def _probe_row(ranked, candidate):
    """The best-ranked linear probe compared here, when the candidate is a fine-tune: the candidate must beat it too
    (a fine-tune is promoted only when it beats the probe on the gate rows)."""
    if mlflow.get_run(candidate.train_run_id).data.tags.get(vocab.PROBE) == "true":
        return None
    for row in ranked.itertuples():
        if row.registered_version and mlflow.get_run(row.train_run_id).data.tags.get(vocab.PROBE) == "true":
            return row
    return None


def _write(runs, ranked, predictions, costs, decision: gate.Decision, args, task) -> None:
    leader = predictions[ranked.loc[0, "train_run_id"]]
    text = report.render(ranked, runs, vars(decision), comparison.confusion(leader, task), args.min_improvement,
                         costs, args.latency_budget_ms,
                         training=comparison.training_histories(ranked, predictions, task))
    with tempfile.TemporaryDirectory() as tmp:
        ranked.to_csv(Path(tmp) / "comparison.csv", index=False)
        costs.to_csv(Path(tmp) / "frontier.csv", index=False)
        runs.to_csv(Path(tmp) / "comparison_runs.csv", index=False)
        (Path(tmp) / "comparison.md").write_text(report.to_markdown(ranked))
        (Path(tmp) / "report.md").write_text(text)
        mlflow.log_artifacts(tmp, "comparison")
    (staging.folder() / "report.md").write_text(text)
    lifecycle.publish_on_success(staging.folder() / "report.md")  # next to the figures in graficas/
    for path in plots.comparison(ranked, runs, comparison.histories(runs)) + [plots.frontier(costs)]:
        lifecycle.log_plot(path)
    log.info("report:\n%s", text)


def compare(args: argparse.Namespace) -> gate.Decision:
    if args.gate_data_run_id:
        lifecycle.get_run(args.gate_data_run_id, vocab.PREPARE_DATA, vocab.TRAIN)
    runs, ranked, predictions, evaluations, task = _tables(args)
    lifecycle.log_params({"registered_model": args.registered_model, "min_improvement": args.min_improvement,
                         "latency_budget_ms": args.latency_budget_ms, "run_ids": ",".join(runs["train_run_id"]),
                         "gate_data_run_id": args.gate_data_run_id, "min_gate_rows": args.min_gate_rows,
                         "min_gate_rows_per_class": args.min_gate_rows_per_class,
                         "int8_tolerance": args.int8_tolerance})
    costs = comparison.frontier(ranked, evaluations, args.latency_budget_ms, args.int8_tolerance)
    if args.latency_budget_ms:
        comparison.check_measured(costs)
        costs = _timed_alike(costs, ranked, args)
    candidate, over = gate.candidate(ranked, comparison.fp32_latency(costs), args.latency_budget_ms)
    with promotion.promotion_lock(args.registered_model) as hold:  # read incumbent -> decide -> set alias,
        # one at a time
        journal = promotion.Journal(args.registered_model)  # every tag below is put back if the step fails
        if candidate is None:  # nothing fits the budget: the best-ranked model is the (refused) candidate
            candidate, over = ranked.iloc[0], over[1:]
            decision = gate.over_budget(candidate.registered_version, candidate.model, gate.version_by_alias(
                args.registered_model, gate.CHAMPION), _over_budget_reason(candidate, costs, args.latency_budget_ms))
        else:
            decision = _decide(args, candidate, ranked)
        for row in over:  # ranked above the candidate, refused for their latency alone
            promotion.mark_over_budget(journal, row.registered_version,
                                  _over_budget_reason(row, costs, args.latency_budget_ms))
        _write(runs, ranked, predictions, costs, decision, args, task)
        mlflow.set_tags({vocab.CANDIDATE_MODEL: candidate.model, vocab.CANDIDATE_VERSION:
                         candidate.registered_version, vocab.PROMOTION_DECISION: decision.decision})
        mlflow.log_metrics({"candidate_val_f1_macro": candidate.val_f1_macro,
                            "candidate_val_f1_macro_mean": candidate.val_f1_macro_mean})
        promotion.apply(journal, decision, mlflow.active_run().info.run_id, hold)  # last: the alias
    return decision


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.COMPARE, vocab.COMPARE, plots=True):
        compare(parse_args(argv))


if __name__ == "__main__":
    params.run_and_exit(main)
