"""One declaration per parameter: train's knobs are TrainConfig's `knob` fields (agnews.params), and from them come the
argparse options of train, distill, main and sweep, the sweep's tunable set, MLproject's lines for them and
deploy/kubernetes/MLproject (tools/mlproject.py renders both files; this fails when either is not current, as
test_environment checks the pins)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util

import pytest
import yaml

from agnews import params, values
from agnews.errors import PipelineError
from agnews.orchestration import search_space
from tests.helpers import REPO


def _load(name: str, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator():
    return _load("mlproject_generator", REPO / "tools" / "mlproject.py")


@dataclasses.dataclass
class WithDropout(params.TrainConfig):
    """The declaration with one more knob, as a contributor would add it."""
    dropout: float = params.knob(0.1, values.below_one, "dropout of the classifier head, in [0, 1)")


def test_both_mlproject_files_are_what_the_declaration_renders(generator):
    for path, text in generator.rendered(REPO).items():
        assert path.read_text() == text, f"{path.relative_to(REPO)} is not current: run python tools/mlproject.py"


def test_the_rendering_changes_nothing_a_reader_of_mlproject_sees(generator):
    root = (REPO / "MLproject").read_text()
    assert generator.render_root(root) == root  # rendering again is a no-op
    points = yaml.safe_load(root)["entry_points"]
    for name in generator.ENTRY_POINTS:
        declared = {p.name: {"type": p.mlproject_type, "default": p.default} for p in params.TRAINING_PARAMETERS}
        assert {k: v for k, v in points[name]["parameters"].items() if k in declared} == declared, name
        assert " ".join(f"--{p} {{{p}}}" for p in declared) in points[name]["command"], name
    assert points["train"]["parameters"]["epochs"] == {"type": "float", "default": 0}  # counts are floats; 0: auto


def test_argparse_and_the_sweep_read_the_declaration():
    parser = argparse.ArgumentParser()
    params.add_training_arguments(parser)
    options = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert list(options) == [p.name for p in params.TRAINING_PARAMETERS]
    assert options["epochs"].default == 0 and options["learning_rate"].default == 0.0
    assert options["label_smoothing"].help == "label smoothing of the cross-entropy, in [0, 1)"
    assert params.TUNABLE == params.tunable() == ("epochs", "learning_rate", "batch_size", "max_length",
                                            "early_stopping_patience", "warmup_ratio", "weight_decay", "layer_decay",
                                            "label_smoothing", "reinit_top_k")
    assert params.TRAINING_KEYS == (*params.TUNABLE, "precision", "registered_model")
    assert params.TrainConfig().learning_rate == 5e-5  # the field's default; `-P learning_rate=0` is the preset's
    for name, text, message in [("epochs", "-1", "-P epochs=-1 must be at least 0"),
                                ("warmup_ratio", "1", "-P warmup_ratio=1 is not a number from 0 to below 1")]:
        with pytest.raises(PipelineError, match=message):
            params.training_value(name, text)


def test_a_new_knob_reaches_argparse_both_mlprojects_the_docs_reference_and_the_sweep(generator, monkeypatch,
                                                                                        tmp_path):
    parameters = params.training_parameters(WithDropout)
    assert [p.name for p in parameters][-2:] == ["dropout", "registered_model"]

    parser = params.StepParser()
    params.add_training_arguments(parser, parameters)
    assert parser.parse_args([]).dropout == 0.1 and parser.parse_args(["--dropout", "0.3"]).dropout == 0.3
    with pytest.raises(PipelineError, match=r"-P dropout=1 is not a number from 0 to below 1"):
        parser.parse_args(["--dropout", "1"])

    committed = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    root = generator.render_root((REPO / "MLproject").read_text(), parameters)
    points = yaml.safe_load(root)["entry_points"]
    for name, spec in points.items():
        if name in generator.ENTRY_POINTS:
            assert spec["parameters"]["dropout"] == {"type": "float", "default": 0.1}, name
            assert "--reinit_top_k {reinit_top_k} --dropout {dropout} --registered_model" in " ".join(
                spec["command"].split()), name
        else:
            assert spec == committed[name]  # the other entry points as they were
    kube = yaml.safe_load(generator.render_kubernetes(root, (REPO / generator.KUBERNETES).read_text()))
    assert kube["entry_points"] == points and kube["docker_env"]["image"] == "agnews-mlops:latest"

    monkeypatch.setattr(params, "TRAINING_PARAMETERS", parameters)  # as if WithDropout were TrainConfig
    hook = _load("docs_reference_hook_declarations", REPO / "docs" / "hooks" / "reference.py")
    assert "| `dropout` | float | `0.1` | dropout of the classifier head, in [0, 1) |" in hook.entry_point_markdown(
        "train", points["train"])
    assert "dropout" in params.tunable()
    space = tmp_path / "space.yaml"
    space.write_text("dropout: {low: 0.0, high: 0.5}\n")
    assert search_space.load_space(space)["dropout"].high == 0.5
    space.write_text("dropout: {choices: [0.1, 1.0]}\n")
    with pytest.raises(PipelineError, match=r"search space entry dropout: -P dropout=1.0 is not a number from 0"):
        search_space.load_space(space)
