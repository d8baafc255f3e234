"""Values as the user spells them: `-P` strings read into whole numbers, fractions, booleans, lists, paths and
registered-model names, each wrong one a PipelineError naming the parameter; `same_value` compares a logged
parameter with a value the way MLflow logged it. A leaf module: it imports nothing of agnews but errors."""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from agnews.errors import PipelineError

_REGISTERED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def user_path(value: str) -> Path:
    """A `-P` path as the user meant it: relative to where `mlflow run` was started (MLflow runs the step in the
    project folder, or in a temporary checkout for git URLs)."""
    return (Path(os.environ.get("AGNEWS_LAUNCH_DIR", ".")) / Path(value).expanduser()).absolute()


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


log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
