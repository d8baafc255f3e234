"""A run-context plugin (entry point `mlflow.run_context_provider`) that keeps a KILLED run KILLED and
remembers the folder `mlflow run` was started from.

Its own module: MLflow loads it while `import mlflow` runs, from the context registry, so it must not be
imported half-way through another plugin's import (agnews.runs.experiment loads earlier, from another registry)."""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

from mlflow.tracking.context.abstract_context import RunContextProvider


def keep_killed_status() -> None:
    """MLflow 3.17's `mlflow.projects._maybe_set_run_terminated` compares the run's status string with integer
    codes, so it never sees a run as ended and marks every run whose process exited non-zero FAILED, overwriting
    the KILLED an interrupted step set. Replace it with the comparison it meant, only while the bug is there."""
    import mlflow.projects as projects
    from mlflow.entities import RunStatus
    from mlflow.tracking import MlflowClient

    if RunStatus.is_terminated("KILLED") or getattr(projects._maybe_set_run_terminated, "agnews_fix", False):
        return

    def _maybe_set_run_terminated(active_run, status):
        if active_run is None:
            return
        client = MlflowClient()
        current = client.get_run(active_run.info.run_id).info.status
        if not RunStatus.is_terminated(RunStatus.from_string(current)):
            client.set_terminated(active_run.info.run_id, status)

    _maybe_set_run_terminated.agnews_fix = True
    projects._maybe_set_run_terminated = _maybe_set_run_terminated


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies `keep_killed_status` right after `mlflow.projects` is imported: this module is loaded while
    `import mlflow` runs, when importing mlflow.projects ourselves would be circular."""

    def find_spec(self, name, path, target=None):
        if name != "mlflow.projects":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module) -> None:
            run_module(module)
            keep_killed_status()

        spec.loader.exec_module = exec_module
        return spec


def _install() -> None:
    if "mlflow.projects" in sys.modules:
        keep_killed_status()
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


_install()  # every MLflow process loads this plugin, `mlflow run` included
# The folder the user launched from: steps of a git-URL run work in MLflow's temporary checkout, but their
# figures belong where the user ran `mlflow run` (the first MLflow process sets it; children inherit it).
os.environ.setdefault("AGNEWS_LAUNCH_DIR", os.getcwd())


class ProjectRunContext(RunContextProvider):
    """The entry point MLflow loads (group `mlflow.run_context_provider`); loading it installs the fix above.
    It adds no tags."""

    def in_context(self) -> bool:
        return False

    def tags(self) -> dict[str, str]:
        return {}
