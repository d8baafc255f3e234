"""The steps' parameters, declared once: the argument groups `main`, `train` and `prepare_data` share, and
TrainConfig, whose `knob` fields are train's `-P` knobs (argparse, MLproject, the docs reference and the sweep
space all come from them). Every bad `-P` value becomes one `error:` line naming the parameter as the user
spelled it (MLproject has no int type)."""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
import sys
from dataclasses import MISSING, dataclass, field, fields
from typing import Callable, NoReturn

from agnews import hardware, values
from agnews.errors import PipelineError


def run_and_exit(main: Callable[[], None]) -> NoReturn:
    """A step's `python -m steps.X`: main(), then the exit handlers and flushes, then leave without the interpreter's
    teardown. With torch and transformers loaded, that teardown (freeing every module and object one by one) took
    4-10 s per step process on 2 cores, after the run had already ended and nothing was left to write; `main` waits
    for each child's process, so every child paid it twice over. Exceptions other than SystemExit propagate (a
    traceback, the usual exit)."""
    try:
        main()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # SystemExit("error: ...") prints its message and exits 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # what normal exit runs first: MLflow's and logging's own handlers
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code or 0)


class StepParser(argparse.ArgumentParser):
    """argparse whose errors are PipelineErrors: the step turns them into one line and a FAILED run."""

    def error(self, message: str):
        message = re.sub(r"argument --(\w+)", r"-P \1", message)
        raise PipelineError(f"{message}; see `mlflow run . -e <step> --help` or the README's parameter table")

    def _get_value(self, action, arg_string):  # keep our PipelineError instead of argparse's generic text
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as exc:
            if isinstance(exc.__context__, PipelineError):
                raise exc.__context__ from None
            raise


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="hf:fancyzhx/ag_news",
                        help="hf:<id>, a CSV/TSV/Parquet/JSONL file (also .gz/.bz2/.xz), a save_to_disk folder")
    parser.add_argument("--train_size", type=values._whole_type("train_size", 0), default=1000,
                        help="0: every row the other splits leave (full-data training; no unlabelled pool)")
    parser.add_argument("--val_size", type=values._whole_type("val_size", 2), default=500)
    parser.add_argument("--test_size", type=values._whole_type("test_size", 2), default=500)
    parser.add_argument("--gate_size", type=values._whole_type("gate_size", 0), default=500,
                        help="rows only the promotion gate scores; 0: no gate split")
    parser.add_argument("--seed", type=values._whole_type("seed", 0), default=42)
    add_task_arguments(parser)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """How a source is read: its text and label columns, the label set, a hub dataset's config and splits."""
    from agnews.data import task  # no pandas at parse time beyond what task needs

    parser.add_argument("--text_columns", type=task.parse_columns, default=(),
                        help="columns joined into the text, e.g. headline,body (default: text)")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--labels", type=task.parse_labels, default=(),
                        help="class names in id order, comma list or JSON list; default: from the data")
    parser.add_argument("--data_config", default="", help="a hub dataset's configuration name")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")


def sample_sizes(args: argparse.Namespace):
    from agnews.data.sampling import SampleSizes  # pandas and scikit-learn: only when sampling

    return SampleSizes(args.train_size, args.val_size, args.test_size, args.gate_size)


def data_options(args: argparse.Namespace):
    from agnews.data.reading import DataOptions

    return DataOptions(tuple(args.text_columns), args.label_column.strip() or "label", tuple(args.labels),
                       args.data_config.strip(), args.train_split.strip() or "train", args.test_split.strip() or "test")


def prepare_parameters(args) -> dict:
    """prepare_data's parameters from a parent's arguments (main, sweep): the sample and how the source is read,
    both part of its reuse key."""
    from agnews.data import handoff

    sample = {k: getattr(args, k) for k in ("data", "train_size", "val_size", "test_size", "gate_size", "seed")}
    return {**sample, **handoff.data_option_params(data_options(args))}



def picked(args: argparse.Namespace, keys) -> dict:
    """The parsed arguments named by `keys`, to hand on to a child (TRAINING_KEYS, GATE_KEYS, SCORING_KEYS)."""
    return {key: getattr(args, key) for key in keys}


def add_parent_arguments(parser: argparse.ArgumentParser) -> None:
    """What a parent of train children (main, sweep) takes and hands on: the data, train's knobs, the gate and
    evaluate's scoring."""
    add_data_arguments(parser)
    add_training_arguments(parser)
    add_gate_arguments(parser)
    add_serving_arguments(parser)


def add_training_arguments(parser: argparse.ArgumentParser, parameters: tuple[Parameter, ...] | None = None) -> None:
    """The fine-tuning knobs (TRAINING_PARAMETERS, from TrainConfig's declaration); `main` and `sweep` take the same
    ones and hand them to each train child."""
    for parameter in TRAINING_PARAMETERS if parameters is None else parameters:
        parser.add_argument(f"--{parameter.name}", type=parameter.parse, default=parameter.default, help=parameter.help)


def training_parameter(name: str) -> Parameter:
    """One of train's `-P` parameters as declared (StopIteration for a name that is none)."""
    return next(parameter for parameter in TRAINING_PARAMETERS if parameter.name == name)


def tunable() -> tuple[str, ...]:
    """train's knobs a sweep may search (read when called, so the declaration is the one place that says it)."""
    return tuple(parameter.name for parameter in TRAINING_PARAMETERS if parameter.tunable)


def training_value(name: str, text: str):
    """One train parameter read and checked as `-P name=text` is (PipelineError when train would refuse it): for
    values that come from elsewhere (a sweep's search space, a benchmark's recipe)."""
    return training_parameter(name).parse(text)


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min_improvement", type=values.f1_difference("min_improvement"), default=0.0,
                        help="the gate promotes when the lower end of the paired 95%% interval of the macro-F1 "
                             "difference on gate rows is above this")
    parser.add_argument("--latency_budget_ms", type=values.non_negative("latency_budget_ms"), default=0.0,
                        help="p50 batch-1 latency budget; a candidate over it is never promoted (0: no budget)")
    parser.add_argument("--gate_data_run_id", default="",
                        help="a prepare_data run whose gate split decides (default: the candidate's data run)")
    parser.add_argument("--min_gate_rows", type=values._whole_type("min_gate_rows", 2), default=30,
                        help="fewer unseen gate rows than this and the gate does not decide (the incumbent stays)")
    parser.add_argument("--min_gate_rows_per_class", type=values._whole_type("min_gate_rows_per_class", 1), default=5,
                        help="fewer unseen gate rows than this in any class and the gate does not decide (macro F1 "
                             "averages every class)")


GATE_KEYS = ("registered_model", "min_improvement", "latency_budget_ms", "gate_data_run_id", "min_gate_rows",
             "min_gate_rows_per_class", "int8_tolerance")  # what a parent (main, sweep) hands compare
SCORING_KEYS = ("precision", "int8", "register_int8", "int8_tolerance")  # ... and evaluate, with the data run


def add_int8_tolerance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--int8_tolerance", type=values.f1_difference("int8_tolerance"), default=-0.01,
                        help="an int8 variant is registered or picked only if the lower end of its paired interval "
                             "of (int8 - fp32) test macro F1 is above this")


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """What distill and `main -P distill=true` share (the student itself: distill's `model`, main's `student`)."""
    parser.add_argument("--student_layers", type=values._whole_type("student_layers", 0), default=0,
                        help="keep the student's first N transformer layers (0: all)")
    parser.add_argument("--unlabeled_size", type=values._whole_type("unlabeled_size", 0), default=0,
                        help="rows of the unlabelled pool to use (0: all of it)")
    parser.add_argument("--temperature", type=values.positive("temperature"), default=2.0)
    parser.add_argument("--alpha", type=values.fraction("alpha"), default=0.5,
                        help="weight of the labelled rows' cross-entropy; 1 - alpha on the teacher's soft labels")


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--int8", type=values.boolean("int8"), default=True,
                        help="also export, score and time an int8 ONNX variant of the model")
    parser.add_argument("--register_int8", type=values.boolean("register_int8"), default=False,
                        help="register the int8 variant as a version too (needs int8=true)")
    add_int8_tolerance(parser)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `main`'s children run (agnews.orchestration.launch): how many at once, through which MLflow project
    backend."""
    parser.add_argument("--parallel", type=values._whole_type("parallel", 1), default=1,
                        help="children at once (a train, then its evaluate); 1: one after the other")
    parser.add_argument("--backend", default="local",
                        help="MLflow project backend for every child: local, slurm, kubernetes or a plugin's name")
    parser.add_argument("--backend_config", default="", help="the backend's JSON configuration file")


# train's knobs, declared once. Each TrainConfig field made with `knob` is a `-P` parameter of train, distill, main
# and sweep: from its declaration come their argparse options (add_training_arguments), the sweep's tunable set
# (tunable), the checks of values from elsewhere (training_value) and MLproject's lines for it (tools/mlproject.py
# renders them; tests/unit/test_declarations.py fails when MLproject or deploy/kubernetes/MLproject is not what it
# renders). A field's default is TrainConfig's; `option_default` is the `-P` default where it differs (learning_rate: 0,
# the preset's), `listed` the default as MLproject writes it where str() does not (MLproject has no int type).


@dataclass(frozen=True)
class Parameter:
    """One `-P` parameter: its option, parsing and check (PipelineErrors name the fix), help and default."""
    name: str
    default: object  # argparse's, and MLproject's
    parse: Callable[[str], object]
    help: str | None = None
    tunable: bool = False  # a sweep may search it
    listed: str | None = None  # MLproject's default as written, when it is not str(default)

    @property
    def whole(self) -> bool:
        """A count: MLproject declares it `float` (it has no int), parsing refuses fractions, a sweep draws ints."""
        return isinstance(self.default, int) and not isinstance(self.default, bool)

    @property
    def mlproject_type(self) -> str:
        return "string" if isinstance(self.default, str) else "float"


def at_least(minimum: int) -> Callable[[str], Callable[[str], int]]:
    """A whole-number check for `knob`: name -> parser."""
    return lambda name: values._whole_type(name, minimum)


def named(parse: Callable[[str], object]) -> Callable[[str], Callable[[str], object]]:
    """A parser whose messages already name its parameter, as a check for `knob`."""
    return lambda name: parse


def knob(default, check: Callable[[str], Callable[[str], object]], help: str | None = None, *, tunable: bool = True,
         option_default=MISSING, listed: str | None = None):
    """A TrainConfig field that is also a `-P` parameter; `check(name)` is its parser."""
    return field(default=default, metadata={"parameter": {
        "check": check, "help": help, "tunable": tunable, "listed": listed,
        "default": default if option_default is MISSING else option_default}})


@dataclass
class TrainConfig:
    """How a model is fine-tuned (agnews.training). The fields made with `knob` are train's `-P` knobs, in the
    order MLproject lists them."""
    epochs: int = knob(0, at_least(0), "0: auto, enough epochs for ~180 optimizer steps (3 at 1000 rows, 24 at 120), "
                       "early stopping on validation picking the epoch")  # auto: training.planned_epochs
    learning_rate: float = knob(5e-5, named(values.learning_rate), "0: the preset's default", option_default=0.0,
                                listed="0")
    batch_size: int = knob(16, at_least(1))
    max_length: int = knob(128, at_least(3))  # [CLS] word [SEP]
    precision: str = knob("auto", named(hardware.precision), tunable=False)
    early_stopping_patience: int = knob(2, at_least(0))  # epochs without a better val macro F1; 0 = never stop
    warmup_ratio: float = knob(0.1, values.below_one, "share of the steps with a rising learning rate, in [0, 1)")
    weight_decay: float = knob(0.01, values.non_negative,
                               "AdamW's decoupled weight decay (not on biases and LayerNorm weights)")
    layer_decay: float = knob(1.0, lambda name: values._number(name, 0.0, 1.0, True, "a number in (0, 1], e.g. 0.8"),
                              "layer-wise learning-rate decay from the head down (1: none)")
    label_smoothing: float = knob(0.0, values.below_one, "label smoothing of the cross-entropy, in [0, 1)")
    reinit_top_k: int = knob(0, at_least(0),
                             "re-initialise the top k transformer layers (and the pooler) before fine-tuning")
    seed: int = 42  # a data parameter too (add_data_arguments): not one of these knobs
    max_grad_norm: float = 1.0  # not a `-P` parameter


REGISTERED_MODEL = Parameter("registered_model", "agnews-classifier",
                             values.registered_model_name)  # where train registers


def training_parameters(config: type = TrainConfig) -> tuple[Parameter, ...]:
    """train's `-P` knobs in MLproject's order: `config`'s `knob` fields, then the registered model."""
    knobs = tuple(
        Parameter(f.name, declared["default"], declared["check"](f.name), declared["help"], declared["tunable"],
                  declared["listed"])
        for f in fields(config) if (declared := f.metadata.get("parameter")))
    return (*knobs, REGISTERED_MODEL)


TRAINING_PARAMETERS = training_parameters()
TUNABLE = tunable()  # train's knobs: what a sweep may search
TRAINING_KEYS = (*TUNABLE, *(p.name for p in TRAINING_PARAMETERS if not p.tunable))  # what main/sweep hand a train
