"""A sweep's search space: the YAML read into Optuna distributions over train's tunable parameters (bounds such as
`1e-4` read as numbers), its key, the study name, and the parameters a study holds fixed."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from agnews import params
from agnews.errors import PipelineError

log = logging.getLogger(__name__)
_ENTRY_HELP = "use {low: <number>, high: <number>, log: true|false} or {choices: [<value>, ...]}"


# --- the search space ------------------------------------------------------------------------------------------

def load_space(path: str | Path) -> dict[str, BaseDistribution]:
    """The YAML space as Optuna distributions; every problem is one PipelineError naming the entry and the fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineError(f"search space {path} cannot be read ({exc.strerror or exc}); pass -P search_space=<a "
                            "YAML file>, or leave it empty for sweeps/default.yaml") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"search space {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise PipelineError(f"search space {path} must map train parameters to ranges, e.g. "
                            "learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}")
    tunable = params.tunable()
    unknown = sorted(set(map(str, raw)) - set(tunable))
    if unknown:
        raise PipelineError(f"search space {path} names {', '.join(unknown)}, not a train parameter; use "
                            f"{', '.join(tunable)}")
    return {name: distribution(name, entry) for name, entry in raw.items()}


def distribution(name: str, entry: object) -> BaseDistribution:
    """One entry: choices -> categorical; low/high (log optional) -> int for whole-number parameters, else float."""
    if not isinstance(entry, dict):
        raise PipelineError(f"search space entry {name}: {entry!r} is not a range; {_ENTRY_HELP}")
    extra = set(entry) - {"low", "high", "log", "choices"}
    if extra or ("choices" in entry) == ("low" in entry or "high" in entry):
        raise PipelineError(f"search space entry {name} has {sorted(entry)}; {_ENTRY_HELP}")
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices or len(set(map(str, choices))) != len(choices):
            raise PipelineError(f"search space entry {name}: choices must be a non-empty list of distinct values")
        choices = [_number(value) for value in choices]
        for value in choices:  # each choice must be a value `-P name=` accepts
            _check_value(name, value)
        return CategoricalDistribution(choices)
    low, high, use_log = _number(entry.get("low")), _number(entry.get("high")), entry.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers or not low < high or not isinstance(use_log, bool) or (use_log and low <= 0):
        raise PipelineError(f"search space entry {name}: needs numbers low < high (low > 0 with log: true); got "
                            f"low={low!r}, high={high!r}, log={use_log!r}")
    for value in (low, high):
        _check_value(name, value)
    if params.training_parameter(name).whole:  # train's parsing above refused a fractional bound
        return IntDistribution(int(low), int(high), log=use_log)
    return FloatDistribution(float(low), float(high), log=use_log)


def _number(value: object) -> object:
    """A string that reads as a number, as that number: YAML 1.1 reads `1e-4` (no dot) as the string '1e-4'."""
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _check_value(name: str, value: object) -> None:
    """The value through train's own `-P` parsing (range, type): a space cannot propose what train refuses."""
    try:
        params.training_value(name, str(value))
    except PipelineError as exc:
        raise PipelineError(f"search space entry {name}: {exc}") from None


def space_key(space: dict[str, BaseDistribution]) -> str:
    """The space as canonical JSON: a study is searched over one space."""
    return json.dumps({k: json.loads(optuna.distributions.distribution_to_json(v)) for k, v in sorted(space.items())},
                      sort_keys=True, separators=(",", ":"))


def fixed_parameters(model: str, seed: int, training: dict, space: dict[str, BaseDistribution]) -> dict:
    """What a study holds fixed, as the trials' `-P` values: the model, the seed and every train parameter
    (`training`: cli.TRAINING_KEYS) its space does not search."""
    return {"model": model, "seed": seed, **{k: v for k, v in training.items() if k not in space}}
