"""One vocabulary, one significance rule: every `agnews.*` tag, step name and decision is spelt in agnews/vocab.py
only, with the values existing stores hold; the significance level and the verdict on a lead live in agnews/stats.py
only. Source walks (ast), no MLflow: fast."""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

from agnews import stats, vocab
from agnews.decide import report

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "agnews").rglob("*.py"), *(REPO / "steps").rglob("*.py"),
                  *(REPO / "benchmarks").glob("*.py")])
VOCABULARY = REPO / "agnews" / "vocab.py"
# pyfunc models logged "from code": self-contained on purpose (they must not import agnews), so they spell the
# settings file's name themselves; test_self_contained_models_name_the_same_settings_file holds them to vocab's.
SELF_CONTAINED = {REPO / "agnews" / "serving" / "int8_model.py", REPO / "agnews" / "serving" / "probe_model.py"}
MODULES = {p.stem for p in (REPO / "agnews").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
NAME = re.compile(r"agnews\.([A-Za-z_0-9]+)")

# What stores written before this module hold: a renamed value is a store that no longer reads (runs not found by
# reuse, gates counting from 1 again, monitors missing their references). Add to it; never change a value.
STORED = {
    "agnews.step", "agnews.model", "agnews.error", "agnews.backend_error", "agnews.code_digest", "agnews.input_digest",
    "agnews.cpu", "agnews.failed_child", "agnews.threads", "agnews.reused", "agnews.data_run_id", "agnews.labels",
    "agnews.rows_sha256", "agnews.preset", "agnews.base_model", "agnews.probe", "agnews.train_run_id",
    "agnews.model_uri", "agnews.registered_model", "agnews.registered_version", "agnews.model_version",
    "agnews.model_variant", "agnews.teacher_uri", "agnews.teacher_model", "agnews.teacher_base_model",
    "agnews.teacher_registered_model", "agnews.teacher_version", "agnews.int8_model_uri",
    "agnews.int8_registered_version", "agnews.int8_accepted", "agnews.int8_rejected", "agnews.json",
    "agnews.candidate_model", "agnews.candidate_version", "agnews.promotion_decision", "agnews.gate_decisions",
    "agnews.lease_owner", "agnews.lease_expires", "agnews.health", "agnews.health_reasons", "agnews.monitor_test",
    "agnews.reference_run_id", "agnews.reference_match", "agnews.reference_note", "agnews.reference_for",
    "agnews.reference_data_run_id", "agnews.reference_variant", "agnews.reference_precision", "agnews.health_run_id",
    "agnews.health_alarm", "agnews.health_checked", "agnews.study", "agnews.trial", "agnews.trial_state",
    "agnews.search_space", "agnews.sweep_host", "agnews.sweep_pid", "agnews.heartbeat", "agnews.best_trial",
    "agnews.best_run_id", "agnews.best", "agnews.slurm_job_id", "agnews.slurm_state",
    "prepare_data", "train", "distill", "evaluate", "compare", "predict", "monitor", "sweep", "main",
    "champion", "challenger", "first_champion", "promoted", "kept_incumbent", "already_champion", "over_budget",
    "undecided", "promotion_decision", "promotion_reason", "selected_by_run", "replaced_by_version",
}


def _constants() -> dict[str, str]:
    return {k: v for k, v in vars(vocab).items() if k.isupper() and isinstance(v, str)}


def _strings(path: Path):
    """(line, text) of every string constant in the file that is not a docstring, f-string parts included."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def _spelt_out(path: Path, text: str) -> list[str]:
    """The `agnews.` names a string spells: all but a module path (agnews.data in a message) that is not a tag."""
    values = set(_constants().values())
    return [m.group(0) for m in NAME.finditer(text)
            if m.group(1) not in MODULES or m.group(0) in values
            if not (path in SELF_CONTAINED and text == vocab.MODEL_SETTINGS_FILE)]


def test_no_agnews_string_is_spelt_outside_the_vocabulary():
    found = [f"{path.relative_to(REPO)}:{line}: {text!r}" for path in SOURCES if path != VOCABULARY
             for line, text in _strings(path) if _spelt_out(path, text)]
    assert not found, ("spell these with agnews.vocab (an f-string key: a helper there, e.g. vocab.reused(step)):\n"
                       + "\n".join(found))


def test_the_walk_sees_literals_f_string_parts_and_store_queries(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""agnews.step in a docstring is prose."""\nA = "agnews.data_run_id"\n'
                      'B = f"agnews.reused.{step}"\nC = f"tags.`agnews.step` = \'{step}\'"\n'
                      'D = "report this bug in agnews.data"\nE = "agnews.probe"\n')
    flagged = {text for _, text in _strings(sample) if _spelt_out(sample, text)}
    assert flagged == {"agnews.data_run_id", "agnews.reused.", "tags.`agnews.step` = '", "agnews.probe"}


def test_the_vocabulary_is_a_leaf_with_the_stored_values():
    imports = [node for node in ast.walk(ast.parse(VOCABULARY.read_text())) if isinstance(node, (ast.Import,
                                                                                                  ast.ImportFrom))]
    assert [(node.module, [a.name for a in node.names]) for node in imports] == [("__future__", ["annotations"])]
    constants = _constants()
    values = list(constants.values())
    assert len(values) == len(set(values)), "two names for one value"
    assert set(values) == STORED, f"new: {set(values) - STORED}; gone or renamed: {STORED - set(values)}"
    assert set(vocab.DECISIONS) <= STORED and set(vocab.TRAINING_STEPS) <= STORED


def test_keys_built_from_the_vocabulary_are_the_stored_ones():
    assert vocab.reused(vocab.EVALUATE) == "agnews.reused.evaluate"
    assert vocab.gate_decisions("ab" * 32) == "agnews.gate_decisions." + "ab" * 16  # the first 32 hex digits
    assert vocab.monitor_test("length") == "agnews.monitor_test.length"
    assert vocab.best("learning_rate") == "agnews.best.learning_rate"


def test_self_contained_models_name_the_same_settings_file():
    for path in SELF_CONTAINED:
        assigned = {node.targets[0].id: node.value.value for node in ast.parse(path.read_text()).body
                    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Constant)}
        assert assigned.get("SETTINGS_FILE") == vocab.MODEL_SETTINGS_FILE, path.name


def test_the_significance_level_is_set_in_stats_only():
    setters = [str(path.relative_to(REPO)) for path in SOURCES for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value == 0.05
               and any(isinstance(t, ast.Name) and t.id == "ALPHA" for t in node.targets)]
    assert setters == ["agnews/stats.py"], "ALPHA = 0.05 set outside stats (the gate and the report read stats.ALPHA)"
    assert report.ALPHA is stats.ALPHA and math.isclose(stats.CONFIDENCE, 1 - stats.ALPHA)


@pytest.mark.parametrize("low, high, p, shortfalls", [
    (0.01, 0.03, 0.01, []),
    (0.0, 0.03, 0.01, [stats.INTERVAL_INCLUDES_0]),
    (-0.03, -0.01, 0.01, [stats.INTERVAL_BELOW]),
    (float("nan"), 0.03, None, [stats.INTERVAL_MISSING, stats.P_MISSING]),
    (0.01, 0.03, 0.05, [stats.P_NOT_BELOW_ALPHA]),
    (-0.01, None, float("nan"), [stats.INTERVAL_MISSING, stats.P_MISSING]),
])
def test_one_rule_for_a_lead_in_stats_and_in_the_report(low, high, p, shortfalls):
    assert stats.lead_shortfalls(low, high, p) == shortfalls
    row = {"delta_ci_low": low, "delta_ci_high": high, "mcnemar_p_holm": p}
    assert len(report._not_significant_reasons(row)) == len(shortfalls)
    # a difference (either side) is significant by the same intervals PairedResult reads
    side = stats.interval_side(low, high)
    assert stats.excludes_zero(low, high) == (side in ("above", "below"))
    if side is not None:
        assert stats.PairedResult(10, 0.0, low, high, 0.5, 1).significant == (side != "includes")
