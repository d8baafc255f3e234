"""Step arguments: the groups `main`, `train` and `prepare_data` share, parsed so that every bad `-P` value
becomes one `error:` line naming the parameter as the user spelled it (MLproject has no int type)."""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Callable, NoReturn

from agnews.errors import PipelineError

PRECISIONS = ("auto", "fp32", "bf16")  # here, not in hardware.py or training.py: parsing imports no torch
_REGISTERED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def user_path(value: str) -> Path:
    """A `-P` path as the user meant it: relative to where `mlflow run` was started (MLflow runs the step in the
    project folder, or in a temporary checkout for git URLs)."""
    return (Path(os.environ.get("AGNEWS_LAUNCH_DIR", ".")) / Path(value).expanduser()).absolute()


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


def whole(value: str | float | int, name: str = "value", minimum: int | None = None) -> int:
    """A whole number from a `-P` value or a logged param: "3", "3.0" and 3.0 read as 3; "2.5" is refused."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineError(f"-P {name}={value} is not a number; pass a whole number") from None
    if not number.is_integer():
        raise PipelineError(f"-P {name}={value} is not a whole number; pass e.g. {name}={max(int(number), 1)}")
    if minimum is not None and number < minimum:
        raise PipelineError(f"-P {name}={value} must be at least {minimum}")
    return int(number)


def same_value(logged: str | None, value: object) -> bool:
    """A param as logged (`-P epochs=3.0` is logged "3.0") against a value: `3`, `3.0` and 3 are the same."""
    if logged is None:
        return False
    if logged == "''":  # `mlflow run` logs an empty -P value shell-quoted
        logged = ""
    try:
        return float(logged) == float(value)
    except (TypeError, ValueError):
        return logged == str(value)


def _whole_type(name: str, minimum: int | None):
    return lambda value: whole(value, name, minimum)


def registered_model_name(value: str) -> str:
    if not _REGISTERED_NAME.match(value):
        raise PipelineError(f"-P registered_model={value!r} is not a valid registered model name; use letters, "
                            "digits, '.', '_' or '-' (no '/', ':' or spaces), e.g. agnews-classifier")
    return value


def precision(value: str) -> str:
    if value not in PRECISIONS:
        raise PipelineError(f"-P precision={value!r} is unknown; use one of {', '.join(PRECISIONS)}")
    return value


def learning_rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise PipelineError(f"-P learning_rate={value} is not a number; pass e.g. 5e-5 (0 = the preset's)") from None
    if not 0 <= rate < 1:
        raise PipelineError(f"-P learning_rate={value} is out of range; pass a rate in [0, 1), e.g. 5e-5")
    return rate


def f1_difference(name: str):
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not -1 <= number <= 1:
            raise PipelineError(f"-P {name}={value} is not a macro-F1 difference in [-1, 1]; pass e.g. 0.0")
        return number
    return parse


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
    parser.add_argument("--train_size", type=_whole_type("train_size", 0), default=1000,
                        help="0: every row the other splits leave (full-data training; no unlabelled pool)")
    parser.add_argument("--val_size", type=_whole_type("val_size", 2), default=500)
    parser.add_argument("--test_size", type=_whole_type("test_size", 2), default=500)
    parser.add_argument("--gate_size", type=_whole_type("gate_size", 0), default=500,
                        help="rows only the promotion gate scores; 0: no gate split")
    parser.add_argument("--seed", type=_whole_type("seed", 0), default=42)
    add_task_arguments(parser)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """How a source is read: its text and label columns, the label set, a hub dataset's config and splits."""
    from agnews import task  # no pandas at parse time beyond what task needs

    parser.add_argument("--text_columns", type=task.parse_columns, default=(),
                        help="columns joined into the text, e.g. headline,body (default: text)")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--labels", type=task.parse_labels, default=(),
                        help="class names in id order, comma list or JSON list; default: from the data")
    parser.add_argument("--data_config", default="", help="a hub dataset's configuration name")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")


def sample_sizes(args: argparse.Namespace):
    from agnews.data import SampleSizes  # pandas and scikit-learn: only when sampling

    return SampleSizes(args.train_size, args.val_size, args.test_size, args.gate_size)


def data_options(args: argparse.Namespace):
    from agnews.data import DataOptions

    return DataOptions(tuple(args.text_columns), args.label_column.strip() or "label", tuple(args.labels),
                       args.data_config.strip(), args.train_split.strip() or "train", args.test_split.strip() or "test")


def values(args: argparse.Namespace, keys) -> dict:
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
    parser.add_argument("--min_improvement", type=f1_difference("min_improvement"), default=0.0,
                        help="the gate promotes when the lower end of the paired 95%% interval of the macro-F1 "
                             "difference on gate rows is above this")
    parser.add_argument("--latency_budget_ms", type=non_negative("latency_budget_ms"), default=0.0,
                        help="p50 batch-1 latency budget; a candidate over it is never promoted (0: no budget)")
    parser.add_argument("--gate_data_run_id", default="",
                        help="a prepare_data run whose gate split decides (default: the candidate's data run)")
    parser.add_argument("--min_gate_rows", type=_whole_type("min_gate_rows", 2), default=30,
                        help="fewer unseen gate rows than this and the gate does not decide (the incumbent stays)")
    parser.add_argument("--min_gate_rows_per_class", type=_whole_type("min_gate_rows_per_class", 1), default=5,
                        help="fewer unseen gate rows than this in any class and the gate does not decide (macro F1 "
                             "averages every class)")


GATE_KEYS = ("registered_model", "min_improvement", "latency_budget_ms", "gate_data_run_id", "min_gate_rows",
             "min_gate_rows_per_class", "int8_tolerance")  # what a parent (main, sweep) hands compare
SCORING_KEYS = ("precision", "int8", "register_int8", "int8_tolerance")  # ... and evaluate, with the data run


def add_int8_tolerance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--int8_tolerance", type=f1_difference("int8_tolerance"), default=-0.01,
                        help="an int8 variant is registered or picked only if the lower end of its paired interval "
                             "of (int8 - fp32) test macro F1 is above this")


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """What distill and `main -P distill=true` share (the student itself: distill's `model`, main's `student`)."""
    parser.add_argument("--student_layers", type=_whole_type("student_layers", 0), default=0,
                        help="keep the student's first N transformer layers (0: all)")
    parser.add_argument("--unlabeled_size", type=_whole_type("unlabeled_size", 0), default=0,
                        help="rows of the unlabelled pool to use (0: all of it)")
    parser.add_argument("--temperature", type=positive("temperature"), default=2.0)
    parser.add_argument("--alpha", type=fraction("alpha"), default=0.5,
                        help="weight of the labelled rows' cross-entropy; 1 - alpha on the teacher's soft labels")


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--int8", type=boolean("int8"), default=True,
                        help="also export, score and time an int8 ONNX variant of the model")
    parser.add_argument("--register_int8", type=boolean("register_int8"), default=False,
                        help="register the int8 variant as a version too (needs int8=true)")
    add_int8_tolerance(parser)


def _number(name: str, low: float, high: float, low_open: bool, wording: str):
    """A `-P` float within [low, high] (low excluded when `low_open`); NaN and text are refused too."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not (low < number if low_open else low <= number) or not number <= high:
            raise PipelineError(f"-P {name}={value} is not {wording}")
        return number
    return parse


def positive(name: str):
    return _number(name, 0.0, sys.float_info.max, True, "a number > 0")  # inf is no budget nor temperature


def fraction(name: str):
    return _number(name, 0.0, 1.0, False, "a number from 0 to 1")


def below_one(name: str):
    """A share in [0, 1): a warm-up of 1.0 would read as one step to the Trainer, a smoothing of 1 as no labels."""
    return _number(name, 0.0, 1.0 - sys.float_info.epsilon, False, "a number from 0 to below 1, e.g. 0.1")


def open_fraction(name: str):
    """A rate in (0, 1): 0 would never flag anything, 1 always."""
    return _number(name, 0.0, 1.0 - sys.float_info.epsilon, True, "a number between 0 and 1 (exclusive), e.g. 0.01")


def non_negative(name: str):
    return _number(name, 0.0, sys.float_info.max, False, "a number >= 0")


def boolean(name: str):
    def parse(value: str) -> bool:
        if value.strip().lower() in ("true", "1", "yes"):
            return True
        if value.strip().lower() in ("false", "0", "no"):
            return False
        raise PipelineError(f"-P {name}={value} is not true or false")
    return parse


def model_list(value: str) -> list[str]:
    """`-P models=a,b`: at least one, each once."""
    names = [m.strip() for m in value.split(",") if m.strip()]
    if not names:
        raise PipelineError("-P models is empty; pass e.g. models=tinybert,bert-mini,distilbert or any hub id/folder")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise PipelineError(f"-P models lists {', '.join(twice)} more than once; list each model once "
                            "(use -P seeds=1,2,3 to train a model several times)")
    return names


def seed_list(value: str, default: int) -> list[int]:
    """`-P seeds=1,2,3`; empty: the one `seed`."""
    seeds = [whole(s, "seeds", 0) for s in value.split(",") if s.strip()] or [default]
    if len(set(seeds)) != len(seeds):
        raise PipelineError(f"-P seeds={value} repeats a seed; list each seed once")
    return seeds


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `main`'s children run (agnews.launch): how many at once, through which MLflow project backend."""
    parser.add_argument("--parallel", type=_whole_type("parallel", 1), default=1,
                        help="children at once (a train, then its evaluate); 1: one after the other")
    parser.add_argument("--backend", default="local",
                        help="MLflow project backend for every child: local, slurm, kubernetes or a plugin's name")
    parser.add_argument("--backend_config", default="", help="the backend's JSON configuration file")


# train's knobs, declared once. Each TrainConfig field made with `knob` is a `-P` parameter of train, distill, main
# and sweep: from its declaration come their argparse options (add_training_arguments), the sweep's tunable set
# (tunable), the checks of values from elsewhere (training_value) and MLproject's lines for it (tools/mlproject.py
# renders them; tests/test_declarations.py fails when MLproject or deploy/kubernetes/MLproject is not what it renders).
# A field's default is TrainConfig's; `option_default` is the `-P` default where it differs (learning_rate: 0, the
# preset's), `listed` the default as MLproject writes it where str() does not (MLproject has no int type).


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
    return lambda name: _whole_type(name, minimum)


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
    learning_rate: float = knob(5e-5, named(learning_rate), "0: the preset's default", option_default=0.0,
                                listed="0")
    batch_size: int = knob(16, at_least(1))
    max_length: int = knob(128, at_least(3))  # [CLS] word [SEP]
    precision: str = knob("auto", named(precision), tunable=False)
    early_stopping_patience: int = knob(2, at_least(0))  # epochs without a better val macro F1; 0 = never stop
    warmup_ratio: float = knob(0.1, below_one, "share of the steps with a rising learning rate, in [0, 1)")
    weight_decay: float = knob(0.01, non_negative,
                               "AdamW's decoupled weight decay (not on biases and LayerNorm weights)")
    layer_decay: float = knob(1.0, lambda name: _number(name, 0.0, 1.0, True, "a number in (0, 1], e.g. 0.8"),
                              "layer-wise learning-rate decay from the head down (1: none)")
    label_smoothing: float = knob(0.0, below_one, "label smoothing of the cross-entropy, in [0, 1)")
    reinit_top_k: int = knob(0, at_least(0),
                             "re-initialise the top k transformer layers (and the pooler) before fine-tuning")
    seed: int = 42  # a data parameter too (add_data_arguments): not one of these knobs
    max_grad_norm: float = 1.0  # not a `-P` parameter


REGISTERED_MODEL = Parameter("registered_model", "agnews-classifier", registered_model_name)  # where train registers


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
