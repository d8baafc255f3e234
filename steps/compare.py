"""compare: table the models trained under one parent (or `run_ids`), plot them, promote the champion."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import mlflow

from agnews import plots, report, tracking
from agnews.errors import PipelineError

log = logging.getLogger("steps.compare")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run_ids", default="", help="comma list of train/evaluate run ids; default: siblings")
    parser.add_argument("--registered_model", default="agnews-classifier")
    return parser.parse_args(argv)


def _runs(run_ids: str) -> tuple[list, list]:
    """Train and evaluate runs: the named ones (plus the evaluate runs of named train runs), or the siblings."""
    client = mlflow.MlflowClient()
    if run_ids:
        named = [tracking.get_run(i.strip(), "train", "evaluate") for i in run_ids.split(",") if i.strip()]
        trains = {r.info.run_id: r for r in named if r.data.tags[tracking.STEP_TAG] == "train"}
        for r in named:
            if r.data.tags[tracking.STEP_TAG] == "evaluate":
                trains.setdefault(r.data.tags["agnews.train_run_id"],
                                  tracking.get_run(r.data.tags["agnews.train_run_id"], "train"))
        evals = [run for train_id, train in trains.items() for run in client.search_runs(
            [train.info.experiment_id], f"tags.`agnews.train_run_id` = '{train_id}' and "
            f"tags.`{tracking.STEP_TAG}` = 'evaluate' and attributes.status = 'FINISHED'")]
        return list(trains.values()), evals
    own = mlflow.active_run()
    parent = own.data.tags.get("mlflow.parentRunId")
    if not parent:
        raise PipelineError("compare has no parent run to read siblings from; pass -P run_ids=<train run ids>")
    siblings = client.search_runs([own.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}' "
                                                            "and attributes.status = 'FINISHED'")
    by_step = lambda step: [r for r in siblings if r.data.tags.get(tracking.STEP_TAG) == step]  # noqa: E731
    return by_step("train"), by_step("evaluate")


def compare(args: argparse.Namespace) -> str:
    trains, evals = _runs(args.run_ids)
    if not trains:
        raise PipelineError("no finished train runs to compare; run train first or pass -P run_ids=<ids>")
    ranked = report.rank(report.table(trains, evals))
    wrong = set(ranked["registered_model"]) - {args.registered_model}
    if wrong:
        raise PipelineError(f"runs registered into {sorted(wrong)}, not {args.registered_model!r}; "
                            "pass -P registered_model=<their registered model>")
    tracking.log_params({"registered_model": args.registered_model, "run_ids": ",".join(ranked["train_run_id"])})
    with tempfile.TemporaryDirectory() as tmp:
        ranked.to_csv(Path(tmp) / "comparison.csv", index=False)
        (Path(tmp) / "comparison.md").write_text(report.to_markdown(ranked))
        mlflow.log_artifacts(tmp, "comparison")
    histories = {row.model: report.history(row.train_run_id) for row in ranked.itertuples()}
    for path in plots.comparison(ranked, histories):
        tracking.log_plot(path)

    best = ranked.iloc[0]
    runner_up = ranked.iloc[1] if len(ranked) > 1 else None
    reason = (f"best validation macro F1 {best.val_f1_macro:.4f} of {len(ranked)} model(s)"
              + (f"; runner-up {runner_up.model} {runner_up.val_f1_macro:.4f}" if runner_up is not None else "")
              + (" (tie broken by fewer parameters)" if runner_up is not None
                 and runner_up.val_f1_macro == best.val_f1_macro else ""))
    tracking.set_champion(args.registered_model, best.registered_version, {
        "champion_reason": reason, "selection_metric": "val_f1_macro",
        "val_f1_macro": f"{best.val_f1_macro:.4f}", "test_f1_macro": f"{best.test_f1_macro:.4f} (reported, not used)",
        "selected_by_run": mlflow.active_run().info.run_id})
    mlflow.set_tags({"agnews.champion_model": best.model, "agnews.champion_version": best.registered_version})
    mlflow.log_metrics({"champion_val_f1_macro": best.val_f1_macro, "champion_test_f1_macro": best.test_f1_macro})
    log.info("champion: %s (version %s): %s", best.model, best.registered_version, reason)
    log.info("comparison:\n%s", report.to_markdown(ranked))
    return best.registered_version


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tracking.setup()
    with tracking.step_run("compare", "compare"):
        compare(args)


if __name__ == "__main__":
    main()
