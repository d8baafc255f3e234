"""Bad input through the real CLI: one clear line, a FAILED run, and nothing half-written."""
from __future__ import annotations

import re

import pytest
from conftest import SMALL, TINY, client_for, mlflow_cli, project_copy, runs_of
from test_models import TINYBERT_ID, populate_hf_cache


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_copy(tmp_path_factory.mktemp("failures") / "project")


def _bad_files(folder):
    files = {
        "missing_column": "text,category\nhello world,1\n",
        "unknown_label": "text,label\n" + "".join(f"row {i},{i % 4}\n" for i in range(20)) + "bad row,9\n",
        "empty_text": "".join(f'"{i % 4 + 1}","title {i}","body"\n' for i in range(20)) + '"2","",""\n',
    }
    for name, content in files.items():
        (folder / f"{name}.csv").write_text(content)
    return folder


CASES = {
    "missing_column": ("data={data}/missing_column.csv", r"lacks column\(s\) \['label'\]"),
    "unknown_label": ("data={data}/unknown_label.csv", r"row 21 has unknown label '9'; label must be 0-3"),
    "empty_text": ("data={data}/empty_text.csv", r"row 21 has empty text; fill it or drop the row"),
    "unknown_model": ("model=tinybertt", r"unknown model 'tinybertt': use a preset"),
    "train_size_too_large": ("train_size=100000", r"exceeds the 160 rows of"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, project, tmp_path, fixture_csv, tiny_model):
    data = _bad_files(tmp_path)
    param, message = CASES[case]
    values = dict(p.split("=", 1) for p in [f"model={tiny_model}", f"data={fixture_csv}", *SMALL, *TINY] if p != "-P")
    key, value = param.format(data=data).split("=", 1)
    values[key] = value  # the one bad value of this case
    params = [arg for k, v in values.items() for arg in ("-P", f"{k}={v}")]
    experiment = f"bad-{case}"
    result = mlflow_cli("run", ".", "-e", "train", "--env-manager", "local", *params,
                        "--experiment-name", experiment, cwd=project)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    client = client_for(project)
    [run] = runs_of(client, experiment)
    assert run.info.status == "FAILED" and re.search(message, run.data.tags["agnews.error"])
    assert client.list_artifacts(run.info.run_id) == []  # no data, model or plots
    assert not client.search_logged_models([run.info.experiment_id])
    assert not client.search_registered_models()
    assert not list((project / "graficas").glob("*.png"))


def test_missing_run_id_fails_cleanly(project):
    result = mlflow_cli("run", ".", "-e", "evaluate", "--env-manager", "local", "-P", "train_run_id=0123456789abcdef",
                        "--experiment-name", "bad-run-id", cwd=project)
    assert result.returncode != 0
    assert re.search(r"error: run '0123456789abcdef' not found in sqlite:///.*; pass the id of a train run",
                     result.stderr)
    [run] = runs_of(client_for(project), "bad-run-id")
    assert run.info.status == "FAILED"


def test_hub_id_from_offline_cache_through_cli(tmp_path, fixture_csv, tiny_model):
    """-P model=tinybert resolves huawei-noah/TinyBERT_General_4L_312D from a populated HF cache, offline."""
    project = project_copy(tmp_path / "project")
    populate_hf_cache(tmp_path / "hf", TINYBERT_ID, tiny_model)
    result = mlflow_cli("run", ".", "-e", "train", "--env-manager", "local", "-P", "model=tinybert",
                        "-P", f"data={fixture_csv}", *SMALL, "-P", "epochs=1",
                        cwd=project, env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(project)
    [run] = runs_of(client)
    assert run.info.run_name == "train tinybert" and run.data.params["base_model"] == TINYBERT_ID
    assert run.data.params["effective_learning_rate"] == "0.0001"  # the preset's documented default
    version = client.get_model_version("agnews-classifier", run.data.tags["agnews.registered_version"])
    assert (version.tags["preset"], version.tags["base_model"]) == ("tinybert", TINYBERT_ID)
    assert (project / "graficas" / "tinybert_loss_function.png").is_file()


def test_main_stops_at_a_failed_child_and_names_it(project, tmp_path, tiny_model):
    data = _bad_files(tmp_path)
    result = mlflow_cli("run", ".", "--env-manager", "local", "-P", f"models={tiny_model}",
                        "-P", f"data={data}/unknown_label.csv", *SMALL, "--experiment-name", "bad-main", cwd=project)
    assert result.returncode != 0
    assert re.search(r"error: child run 'prepare_data' failed", result.stderr)
    client = client_for(project)
    runs = runs_of(client, "bad-main")
    parent = next(r for r in runs if r.data.tags.get("agnews.step") == "main")
    assert parent.info.status == "FAILED" and parent.data.tags["agnews.failed_child"] == "prepare_data"
    assert [r.data.tags["agnews.step"] for r in runs if r is not parent] == ["prepare_data"]  # nothing after it
    assert not client.search_registered_models()
