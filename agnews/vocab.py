"""The project's vocabulary, in one place: every `agnews.*` tag it writes on runs and registered models, the step
names, the registry aliases and the promotion decisions. A leaf module: it imports nothing from agnews and no mlflow.

The values are what existing tracking stores hold: change none of them (a renamed tag is a store that no longer
reads). `tests/unit/test_vocabulary.py` fails when an `agnews.` string literal appears in agnews/ or steps/ outside this
module.
"""
from __future__ import annotations

# --- steps: an MLproject entry point and the value of its runs' STEP tag are the same name ---
PREPARE_DATA, TRAIN, DISTILL, EVALUATE, COMPARE = "prepare_data", "train", "distill", "evaluate", "compare"
PREDICT, MONITOR, SWEEP, MAIN = "predict", "monitor", "sweep", "main"
TRAINING_STEPS = (TRAIN, DISTILL)  # steps that leave a registered candidate

# --- the promotion gate: registry aliases and the decisions it records ---
CHAMPION, CHALLENGER = "champion", "challenger"
FIRST_CHAMPION, PROMOTED, KEPT_INCUMBENT = "first_champion", "promoted", "kept_incumbent"
ALREADY_CHAMPION, OVER_BUDGET, UNDECIDED = "already_champion", "over_budget", "undecided"
DECISIONS = (FIRST_CHAMPION, PROMOTED, KEPT_INCUMBENT, ALREADY_CHAMPION, OVER_BUDGET, UNDECIDED)
# tags on the candidate's model version (unprefixed, as registered since the first gate; the gate's figures are
# written beside them under the names of gate.Decision's fields)
VERSION_DECISION, VERSION_REASON = "promotion_decision", "promotion_reason"
SELECTED_BY_RUN, REPLACED_BY_VERSION = "selected_by_run", "replaced_by_version"

# --- every step run ---
STEP = "agnews.step"  # which step a run is (one of the step names above)
ERROR = "agnews.error"  # why a run failed, one line
BACKEND_ERROR = "agnews.backend_error"  # why its backend (e.g. Slurm) ended or could not cancel it
CODE_DIGEST, INPUT_DIGEST = "agnews.code_digest", "agnews.input_digest"  # step reuse: same code, same inputs
CPU = "agnews.cpu"  # the machine an evaluate run measured on

# --- a parent run (main, sweep) and its children ---
FAILED_CHILD = "agnews.failed_child"  # the child run whose failure ended the parent
THREADS = "agnews.threads"  # CPU threads a child was given
REUSED = "agnews.reused"  # prefix: REUSED.<entry point> lists the finished runs a parent reused


def reused(entry_point: str) -> str:
    """The parent's tag listing the runs of `entry_point` it reused instead of running again."""
    return f"{REUSED}.{entry_point}"


# --- data: the prepare_data run and the runs that read it ---
DATA_RUN_ID = "agnews.data_run_id"  # the prepare_data run a run read its splits and task from
LABELS = "agnews.labels"  # the task's label names, JSON
ROWS_SHA256 = "agnews.rows_sha256"  # {split: rows_digest}; runs prepared before it: computed from data/<split>.parquet

# --- a trained model: train and distill runs, and the runs that use one ---
MODEL = "agnews.model"  # the model's name in the comparison
PRESET, BASE_MODEL, PROBE = "agnews.preset", "agnews.base_model", "agnews.probe"
TRAIN_RUN_ID = "agnews.train_run_id"  # on an evaluate run: the train or distill run it scored
MODEL_URI = "agnews.model_uri"
REGISTERED_MODEL, REGISTERED_VERSION = "agnews.registered_model", "agnews.registered_version"
MODEL_VERSION, MODEL_VARIANT = "agnews.model_version", "agnews.model_variant"  # on predict and monitor runs
TEACHER_URI, TEACHER_MODEL = "agnews.teacher_uri", "agnews.teacher_model"
TEACHER_BASE_MODEL = "agnews.teacher_base_model"
TEACHER_REGISTERED_MODEL, TEACHER_VERSION = "agnews.teacher_registered_model", "agnews.teacher_version"
INT8_MODEL_URI, INT8_REGISTERED_VERSION = "agnews.int8_model_uri", "agnews.int8_registered_version"
INT8_ACCEPTED, INT8_REJECTED = "agnews.int8_accepted", "agnews.int8_rejected"
MODEL_SETTINGS_FILE = "agnews.json"  # not a tag: the settings file inside a logged pyfunc model's folder

# --- compare: the run tags, and the registered model's count of decisions per gate sample ---
CANDIDATE_MODEL, CANDIDATE_VERSION = "agnews.candidate_model", "agnews.candidate_version"
PROMOTION_DECISION = "agnews.promotion_decision"  # one of DECISIONS
GATE_DECISIONS = "agnews.gate_decisions"  # how many decisions a gate sample made: before 2026-12 on its data run only


def gate_decisions(digest: str) -> str:
    """The registered model's tag counting the decisions made on the gate sample with this rows digest."""
    return f"{GATE_DECISIONS}.{digest[:32]}"


# --- the registry lease a compare holds (registered-model tags) ---
LEASE_OWNER, LEASE_EXPIRES = "agnews.lease_owner", "agnews.lease_expires"

# --- monitoring: a predict run's health, the reference it was tested against, a monitor run's summary ---
HEALTH, HEALTH_REASONS = "agnews.health", "agnews.health_reasons"
MONITOR_TEST = "agnews.monitor_test"  # prefix: MONITOR_TEST.<statistic> says which test checked it


def monitor_test(statistic: str) -> str:
    """The predict run's tag naming the test a monitored statistic went through."""
    return f"{MONITOR_TEST}.{statistic}"


REFERENCE_RUN_ID = "agnews.reference_run_id"  # on a predict run: where the reference it was tested against lives
REFERENCE_MATCH = "agnews.reference_match"  # on a predict run: exact, computed or fallback
REFERENCE_NOTE = "agnews.reference_note"  # on a predict run: which reference, and why when not an exact one
REFERENCE_FOR = "agnews.reference_for"  # on a predict run that computed the reference of a training run
# on a run holding a reference: the rows it profiled, and as what (evaluate's older runs: its own tags and params)
REFERENCE_DATA_RUN_ID, REFERENCE_VARIANT = "agnews.reference_data_run_id", "agnews.reference_variant"
REFERENCE_PRECISION = "agnews.reference_precision"
HEALTH_RUN_ID, HEALTH_ALARM, HEALTH_CHECKED = "agnews.health_run_id", "agnews.health_alarm", "agnews.health_checked"

# --- sweeps ---
STUDY, TRIAL, TRIAL_STATE, SEARCH_SPACE = "agnews.study", "agnews.trial", "agnews.trial_state", "agnews.search_space"
SWEEP_HOST, SWEEP_PID, HEARTBEAT = "agnews.sweep_host", "agnews.sweep_pid", "agnews.heartbeat"
BEST_TRIAL, BEST_RUN_ID = "agnews.best_trial", "agnews.best_run_id"
BEST = "agnews.best"  # prefix: BEST.<parameter> is the best trial's value of it


def best(parameter: str) -> str:
    """The sweep run's tag holding the best trial's value of `parameter`."""
    return f"{BEST}.{parameter}"


# --- the Slurm backend ---
SLURM_JOB_ID, SLURM_STATE = "agnews.slurm_job_id", "agnews.slurm_state"
