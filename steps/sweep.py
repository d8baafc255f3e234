"""sweep: tune one model's train parameters with Optuna. One parent run (`sweep <model>`); prepare_data once (or
reused); each trial a `train` child on that data run, up to `-P parallel` at once on `-P backend`
(agnews.orchestration.launch); then the best trial goes through evaluate and compare (the gate) like any candidate
(agnews.orchestration.sweep)."""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import mlflow

from agnews import drawing, params, values, vocab
from agnews.data import handoff
from agnews.errors import PipelineError
from agnews.orchestration import launch, placement, search_space, sweep, sweep_report
from agnews.orchestration.launch import Launcher, Steps
from agnews.runs import lifecycle, reuse
from agnews.training import models

log = logging.getLogger("steps.sweep")
PROJECT_DIR = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--model", default="minilm", help="preset, hub id or folder to tune")
    parser.add_argument("--n_trials", type=lambda v: values.whole(v, "n_trials", 1), default=20,
                        help="trials to add to the study")
    parser.add_argument("--study", default="", help="the study's name; the same name resumes it (default: "
                                                     "sweep-<model>)")
    parser.add_argument("--search_space", default="", help="YAML search space (default: sweeps/default.yaml)")
    parser.add_argument("--prune", type=values.boolean("prune"), default=True,
                        help="stop trials the median pruner rejects, from their per-epoch validation macro F1")
    params.add_parent_arguments(parser)
    parser.add_argument("--reuse", type=values.boolean("reuse"), default=True,
                        help="reuse a finished prepare_data and evaluate with the same parameters, code and inputs")
    params.add_launch_arguments(parser)
    return parser.parse_args(argv)


def run_sweep(args: argparse.Namespace) -> None:
    spec = models.resolve_model(args.model)
    if spec.probe:  # nothing of a probe is tuned by train's knobs: every trial would be the same regression
        raise PipelineError(f"-P model={args.model} is a linear probe: its regularisation is chosen on validation "
                            "already and train's parameters do not reach it; sweep a fine-tune (-P model=<model>)")
    space = search_space.load_space(values.user_path(args.search_space) if args.search_space
                             else PROJECT_DIR / "sweeps" / "default.yaml")
    name = sweep.study_name(args.study, spec.name)
    lifecycle.set_run_name(f"sweep {spec.name}")
    lifecycle.log_params({**vars(args), **handoff.data_option_params(params.data_options(args)), "study": name,
                         "search_space": args.search_space or "sweeps/default.yaml"})
    mlflow.set_tags({sweep.STUDY_TAG: name, sweep.SPACE_TAG: search_space.space_key(space)})
    config = placement.backend_config(args)
    run = mlflow.active_run().info
    with sweep.heartbeat(run.run_id):
        sweep.claim_study(name, run.experiment_id, run.run_id)  # after our tag: of two at once, one sees the other
        _run_study(args, spec, space, name, config)


def _run_study(args: argparse.Namespace, spec, space: dict, name: str, config: dict) -> None:
    steps = Steps(args.reuse, Launcher(str(PROJECT_DIR), 1, args.backend, config))
    data, data_run_id = steps.prepare_data(args)

    training = params.picked(args, params.TRAINING_KEYS)
    study = sweep.open_study(name, mlflow.active_run().info.experiment_id, space, data_run_id, args.seed, args.prune,
                             search_space.fixed_parameters(args.model, args.seed, training, space))
    base = {"model": args.model, "name": spec.name, "data_run_id": data_run_id, **data, **training}
    trials = sweep.Trials(study, base, f"train {spec.name}")
    Launcher(str(PROJECT_DIR), args.parallel, args.backend, config, watch=trials.watch if args.prune else None).run(
        trials.chains(args.n_trials))

    best = sweep_report.best_trial(study)
    _log_study(study, best)
    machine = functools.cache(functools.partial(reuse.machine_key, args.precision))
    scoring = {"data_run_id": data_run_id, **params.picked(args, params.SCORING_KEYS)}
    best_run = best.user_attrs["run_id"]
    steps.run(vocab.EVALUATE, f"evaluate {spec.name} trial {best.user_attrs['number']}",
              {"train_run_id": best_run, **scoring}, machine)
    steps.launcher.one(launch.once(vocab.COMPARE, "compare", {"run_ids": best_run,
                                                          **params.picked(args, params.GATE_KEYS)}))


def _log_study(study: sweep.Study, best) -> None:
    """The trials table, the report, Optuna's plots and the best trial as tags and metrics, on the parent."""
    table = sweep_report.trials_table(study)
    counts = table["state"].value_counts()
    mlflow.log_metrics({"best_val_f1_macro": best.value, "trials": len(table),
                        **{f"trials_{s.lower()}": int(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL")}})
    mlflow.set_tags({vocab.BEST_TRIAL: str(best.user_attrs["number"]),
                     vocab.BEST_RUN_ID: best.user_attrs["run_id"],
                     **{vocab.best(k): str(v) for k, v in best.params.items()}})
    folder = drawing.plots_dir()
    table.to_csv(folder / "trials.csv", index=False)
    (folder / "sweep.md").write_text(sweep_report.report(study, best, table), encoding="utf-8")
    for name in ("trials.csv", "sweep.md"):
        mlflow.log_artifact(str(folder / name), "sweep")
    for path in sweep_report.figures(study, folder):
        lifecycle.log_plot(path)
    log.info("best: trial %s, val macro F1 %.4f, %s", best.user_attrs["number"], best.value, best.params)


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.SWEEP, plots=True):
        run_sweep(parse_args(argv))


if __name__ == "__main__":
    params.run_and_exit(main)
