"""The Model Registry: models logged first and registered last (undone if the step then fails), aliases instead
of deprecated stages, and the champion/challenger gate with its lock."""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from agnews import stats, store, tracking
from agnews.errors import PipelineError

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]))


def _requirements(*packages: str) -> list[str]:
    # Explicit: MLflow's inferred ones pull torchvision, which does not import beside this torch.
    return [f"{pkg}=={md.version(pkg).split('+')[0]}" for pkg in packages]


_EXAMPLE = ["Stocks rallied after the central bank held interest rates steady."]


def _undo_on_failure(info):
    client = mlflow.MlflowClient()
    tracking.on_failure(f"logged model {info.model_id}", lambda: client.delete_logged_model(info.model_id))
    return info


def log_model(pipeline, max_length: int):
    """A text-classification pipeline servable by `mlflow models serve`; not registered yet (see `register`)."""
    return _undo_on_failure(mlflow.transformers.log_model(
        transformers_model=pipeline, name="model", task="text-classification", signature=_signature(),
        input_example=_EXAMPLE, pip_requirements=_requirements("mlflow", "torch", "transformers", "tokenizers",
                                                               "safetensors"),
        model_config={"truncation": True, "max_length": max_length}))


def log_int8_model(folder: Path):
    """The int8 ONNX variant as a pyfunc (model from code: agnews/int8_model.py travels with it), same signature
    as the fp32 pipeline; `mlflow models serve` needs onnxruntime and a tokenizer, not torch."""
    return _undo_on_failure(mlflow.pyfunc.log_model(
        name="model_int8", python_model=str(Path(__file__).with_name("int8_model.py")),
        artifacts={"onnx": str(folder)}, signature=_signature(), input_example=_EXAMPLE,
        pip_requirements=_requirements("mlflow", "onnxruntime", "transformers", "tokenizers", "numpy", "pandas")))


def register(model_uri: str, registered_model: str, tags: dict[str, str]) -> str:
    """The step's last act: a new version of `registered_model`, deleted again if the step fails after all."""
    client = mlflow.MlflowClient()
    existed = _exists(client, registered_model)
    version = str(mlflow.register_model(model_uri, registered_model, tags=tags).version)

    def undo() -> None:
        client.delete_model_version(registered_model, version)
        if not existed and not client.search_model_versions(f"name = '{registered_model}'"):
            client.delete_registered_model(registered_model)  # we created it: leave no empty entry behind

    tracking.on_failure(f"{registered_model} version {version}", undo)
    return version


def _exists(client: mlflow.MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def version_by_alias(registered_model: str, alias: str) -> ModelVersion | None:
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(registered_model, alias)
    except MlflowException:
        return None


@dataclass
class Decision:
    """What the gate decided for the candidate, written onto its version as tags."""

    decision: str  # one of report.DECISIONS
    candidate_model: str
    candidate_version: str
    incumbent_version: str = ""
    incumbent_model: str = ""
    min_improvement: float = 0.0
    gate_rows: int = 0
    gate_excluded: int = 0
    gate_delta_f1_macro: float = float("nan")
    gate_delta_ci_low: float = float("nan")
    gate_delta_ci_high: float = float("nan")
    gate_mcnemar_p: float = float("nan")
    candidate_gate_f1_macro: float = float("nan")
    incumbent_gate_f1_macro: float = float("nan")
    reason: str = ""

    def tags(self) -> dict[str, str]:
        values = {k: v for k, v in asdict(self).items() if k != "decision"}
        out = {"promotion_decision": self.decision}
        for key, value in values.items():
            if value == "" or (isinstance(value, float) and value != value):
                continue
            out[key] = f"{value:.4f}" if isinstance(value, float) else str(value)
        return out


# Figures a decision may or may not have (NaN or ""): an older decision's must not outlive a newer one's.
GATE_TAGS = {f.name for f in fields(Decision)} - {"decision", "candidate_model", "candidate_version",
                                                  "min_improvement", "reason"}


def gate(candidate: str, model: str, incumbent: ModelVersion | None, labels, predict_candidate, predict_incumbent,
         min_improvement: float, excluded: int, seed: int = 0) -> Decision:
    """The promotion rule: the candidate takes `champion` only if the lower end of the paired 95% interval of its
    macro-F1 lead on the gate rows is above `min_improvement`. `predict_*` are lazy: no scoring when not needed."""
    if incumbent is None:
        return Decision("first_champion", model, candidate, min_improvement=min_improvement,
                        reason="no version held champion; the candidate becomes the first champion")
    inc_model = incumbent.tags.get("model", "") or incumbent.tags.get("base_model", "")
    if str(incumbent.version) == candidate:
        return Decision("already_champion", model, candidate, candidate, inc_model, min_improvement,
                        reason="the candidate is the champion's own version; nothing changes")
    if len(labels) == 0:
        raise PipelineError(f"no gate rows left to compare version {candidate} with champion version "
                            f"{incumbent.version} ({excluded} excluded: the incumbent trained or validated on them); "
                            "prepare data with -P gate_size=500 (or larger) and train the candidate on it")
    a, b = predict_candidate(), predict_incumbent()
    result = stats.paired(labels, a, b, "f1_macro", seed=seed)
    promoted = result.ci_low > min_improvement
    decision = Decision(
        "promoted" if promoted else "kept_incumbent", model, candidate, str(incumbent.version), inc_model,
        min_improvement, result.n, excluded, result.delta, result.ci_low, result.ci_high, result.mcnemar_p,
        stats.score("f1_macro", labels, a), stats.score("f1_macro", labels, b))
    verdict = "above" if promoted else "not above"
    decision.reason = (f"on {result.n} gate rows ({excluded} excluded) the candidate's macro-F1 lead over version "
                       f"{incumbent.version} is {result.delta:+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}], "
                       f"McNemar p={result.mcnemar_p:.3g}; the lower end is {verdict} min_improvement "
                       f"{min_improvement:.4f}")
    return decision


def over_budget(candidate: str, model: str, incumbent: ModelVersion | None, reason: str) -> Decision:
    """No model fits the latency budget: nothing is promoted, the incumbent (if any) keeps `champion`."""
    kept = f"version {incumbent.version} keeps champion" if incumbent else "no champion is set"
    return Decision("over_budget", model, candidate, str(incumbent.version) if incumbent else "",
                    (incumbent.tags.get("model", "") if incumbent else ""),
                    reason=f"no trained (fp32) model fits the latency budget; the best-ranked one's {reason}; {kept}")


def mark_over_budget(registered_model: str, version: str, reason: str) -> None:
    """A model ranked above the candidate but refused for its latency; the champion's own record is left alone."""
    champion = version_by_alias(registered_model, CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        return
    client = mlflow.MlflowClient()
    client.set_model_version_tag(registered_model, version, "promotion_decision", "over_budget")
    client.set_model_version_tag(registered_model, version, "promotion_reason", reason)


def promotion_lock(registered_model: str):
    """Held from reading the incumbent to setting the alias, so two compares at once cannot both promote."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in registered_model)  # a file name
    return store.lock(mlflow.get_tracking_uri(), f"promotion-{safe}")


def apply(registered_model: str, decision: Decision, selected_by_run: str) -> None:
    """Tags first, aliases last; if the step fails after this, the aliases are put back as they were."""
    client = mlflow.MlflowClient()
    before = {alias: version_by_alias(registered_model, alias) for alias in (CHAMPION, CHALLENGER)}
    current = before[CHAMPION]
    if (str(current.version) if current else "") != decision.incumbent_version:
        raise PipelineError(f"the champion of {registered_model} moved while this compare ran (now version "
                            f"{current.version if current else 'none'}); re-run compare")
    tags = {**decision.tags(), "promotion_reason": decision.reason, "selected_by_run": selected_by_run}
    stale = set(client.get_model_version(registered_model, decision.candidate_version).tags) & GATE_TAGS - set(tags)
    for key in stale:  # left by an earlier decision on this version; this one has no such figure
        client.delete_model_version_tag(registered_model, decision.candidate_version, key)
    for key, value in tags.items():
        client.set_model_version_tag(registered_model, decision.candidate_version, key, value[:5000])

    def restore() -> None:
        for alias, version in before.items():
            if version is None:
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model_alias(registered_model, alias)
            else:
                client.set_registered_model_alias(registered_model, alias, version.version)

    tracking.on_failure(f"aliases of {registered_model}", restore)
    if decision.decision in ("first_champion", "promoted"):
        if decision.incumbent_version:
            client.set_model_version_tag(registered_model, decision.incumbent_version, "replaced_by_version",
                                         decision.candidate_version)
        client.set_registered_model_alias(registered_model, CHAMPION, decision.candidate_version)
        challenger = before[CHALLENGER]
        if challenger is not None and str(challenger.version) == decision.candidate_version:
            client.delete_registered_model_alias(registered_model, CHALLENGER)
    elif decision.decision == "kept_incumbent":
        client.set_registered_model_alias(registered_model, CHALLENGER, decision.candidate_version)
    log.info("%s: %s", decision.decision, decision.reason)
