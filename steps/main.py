"""main: one parent run; prepare_data, then train + evaluate per model and seed, then compare, each a child run
(or an earlier finished run with the same parameters, code and inputs, reused). Children go through an MLflow
project backend (`-P backend`, local by default), up to `-P parallel` at once (agnews.orchestration.launch)."""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from agnews import params, values, vocab
from agnews.data import handoff
from agnews.orchestration import launch, placement
from agnews.orchestration.launch import Chain, Launcher, Steps
from agnews.runs import lifecycle, reuse
from agnews.training import models

log = logging.getLogger("steps.main")
PROJECT_DIR = str(Path(__file__).resolve().parents[1])  # in a git-URL run: MLflow's checkout of the commit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--models", default="tinybert,bert-mini,distilbert", help="comma list of models")
    parser.add_argument("--seeds", default="", help="comma list of training seeds; empty: the one --seed")
    params.add_parent_arguments(parser)
    parser.add_argument("--distill", type=values.boolean("distill"), default=False,
                        help="after compare, distill the champion into a student, evaluate it and compare again")
    parser.add_argument("--student", default="", help="distill's student model; default: the champion's base model")
    params.add_distill_arguments(parser)
    parser.add_argument("--reuse", type=values.boolean("reuse"), default=True,
                        help="reuse finished runs with the same parameters, code and inputs; false: run everything")
    params.add_launch_arguments(parser)
    return parser.parse_args(argv)


def run_pipeline(args: argparse.Namespace) -> None:
    names = values.model_list(args.models)
    seeds = values.seed_list(args.seeds, args.seed)
    # Unknown names fail before any child starts; two checkpoints with one short name get distinct names.
    specs = models.distinct_names([models.resolve_model(name) for name in names])
    lifecycle.log_params({**vars(args), "seeds": ",".join(map(str, seeds)),
                         **handoff.data_option_params(params.data_options(args))})
    launcher = Launcher(PROJECT_DIR, args.parallel, args.backend, placement.backend_config(args))
    steps = Steps(args.reuse, launcher)
    data, data_run_id = steps.prepare_data(args)
    machine = functools.cache(functools.partial(reuse.machine_key, args.precision))  # evaluate's cost depends on it
    train_params = params.picked(args, params.TRAINING_KEYS)
    scoring = {"data_run_id": data_run_id, **params.picked(args, params.SCORING_KEYS)}

    def train_and_evaluate(name: str, spec: models.ModelSpec, seed: int) -> Chain:
        suffix = f" seed {seed}" if len(seeds) > 1 else ""
        train = yield from steps.child(vocab.TRAIN, f"train {spec.name}{suffix}", {
            "model": name, "name": spec.name, "data_run_id": data_run_id, **data, "seed": seed, **train_params},
            functools.partial(reuse.input_digest, spec.checkpoint))
        yield from steps.child(vocab.EVALUATE, f"evaluate {spec.name}{suffix}", {"train_run_id": train, **scoring},
                               machine)
        return train

    # Up to `parallel` chains at once; compare gets the train runs in models x seeds order whatever finished first.
    train_run_ids = launcher.run(train_and_evaluate(name, spec, seed) for name, spec in zip(names, specs)
                                 for seed in seeds)
    # Never reused: the registry's state is one of its inputs. Named runs: reused ones are not siblings.
    gate = params.picked(args, params.GATE_KEYS)
    probes = [run for run, spec in zip(train_run_ids, [s for s in specs for _ in seeds]) if spec.probe]
    if probes and len(probes) < len(train_run_ids):  # the baseline faces the gate first: a fine-tune is then
        # promoted only by beating, on the gate rows, the probe or a champion the probe could not beat
        launcher.one(launch.once(vocab.COMPARE, "compare the probe baseline", {"run_ids": ",".join(probes), **gate}))
    launcher.one(launch.once(vocab.COMPARE, "compare", {"run_ids": ",".join(train_run_ids), **gate}))
    if args.distill:  # the champion teaches; the student then faces the same gate as every candidate
        student = launcher.one(launch.once(vocab.DISTILL, "distill", {
            "teacher": f"models:/{args.registered_model}@{vocab.CHAMPION}", "model": args.student,
            "data_run_id": data_run_id, "seed": args.seed,
            **{k: v for k, v in train_params.items() if k != "label_smoothing"},  # distill's soft labels smooth
            **params.picked(args, ("student_layers", "unlabeled_size", "temperature", "alpha"))}))
        launcher.one(launch.once(vocab.EVALUATE, "evaluate distilled", {"train_run_id": student, **scoring}))
        launcher.one(launch.once(vocab.COMPARE, "compare with the distilled student",
                             {"run_ids": ",".join([*train_run_ids, student]), **gate}))


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.MAIN, vocab.MAIN):
        run_pipeline(parse_args(argv))


if __name__ == "__main__":
    params.run_and_exit(main)
