"""The environment files agree: requirements.txt (pip, CI), conda.yaml (MLflow's conda and uv/virtualenv env
managers read its pip list, since MLproject names it) and python_env.yaml (which includes requirements.txt)."""
from __future__ import annotations

import yaml

from tests.helpers import REPO


def _requirements() -> set[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()}


def test_conda_yaml_pins_match_requirements():
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    [pip] = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)]
    assert set(pip) - {"-e ."} == _requirements()
    assert "python=3.11" in conda["dependencies"]


def test_python_env_reads_requirements_and_mlproject_names_conda():
    env = yaml.safe_load((REPO / "python_env.yaml").read_text())
    assert env["dependencies"] == ["-r requirements.txt", "-e ."] and env["python"].startswith("3.11")
    mlproject = yaml.safe_load((REPO / "MLproject").read_text())
    assert mlproject["conda_env"] == "conda.yaml"
    assert {"torch==2.13.0", "mlflow==3.17.2", "transformers==5.24.0", "datasets==5.2.0"} <= _requirements()
