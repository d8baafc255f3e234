"""Follow a registry alias while serving: with `models:/<name>@<alias>` the Follower asks the registry every
`poll_s` seconds which version holds the alias; when it moves, the new version is loaded beside the old one (in the
poller's thread, off the request path), the batch worker gets it at the start of its next batch, and the old one is
closed. A version that fails to load is logged and counted once (not fetched again while the alias stays on it),
and the old one keeps serving; so does a registry that does not answer. A pinned URI (`models:/<name>/<n>`,
`runs:/...`) is loaded once and never polled."""
from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Callable, ContextManager

import mlflow

from agnews.errors import cause
from agnews.serving import classifiers
from agnews.serving.telemetry import counter
from agnews.serving.traffic import Served

log = logging.getLogger(__name__)
_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")

Loader = Callable[[str], ContextManager]  # a models:/ URI -> a context manager holding the loaded classifier


class Follower:
    """The classifier to serve now, following `model_uri`'s alias (if any). `required=False` (the shadow's
    challenger): an alias that holds no version yet is not an error; `current()` is None until it does."""

    def __init__(self, model_uri: str, load: Loader, poll_s: float = 30, required: bool = True,
                 what: str = "served"):
        self.model_uri, self._load, self.poll_s, self.required, self.what = model_uri.strip(), load, poll_s, \
            required, what
        match = _ALIAS.match(self.model_uri)
        self.name, self.alias = (match["name"], match["alias"]) if match else ("", "")
        self._served: Served | None = None
        self._stack: contextlib.ExitStack | None = None
        self._lock, self._stopped = threading.Lock(), threading.Event()
        self._thread: threading.Thread | None = None
        self.switches = self.load_failures = self.poll_failures = 0
        self._failed = ""  # the version that last failed to load: not downloaded again until the alias moves on

    # --- what the server asks ---
    def start(self) -> None:
        """The first version loaded now (a failure here is the caller's: the server does not start without a
        model), then the poller, when there is an alias to follow."""
        self._stopped.clear()
        if self._served is None:
            version = self._resolve()
            if version or not self.alias:
                self._switch(version, first=True)
        if self.alias and self.poll_s > 0 and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._poll, name=f"follow-{self.alias}", daemon=True)
            self._thread.start()

    def current(self) -> Served | None:
        return self._served

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if self._stack is not None:
                self._stack.close()
            self._stack, self._served = None, None

    def health(self) -> dict:
        return {"alias": self.alias, "alias_poll_s": self.poll_s, "alias_switches": self.switches,
                "version_load_failures": self.load_failures} if self.what == "served" else {}

    def metric_lines(self) -> list[str]:
        prefix = f"agnews_{self.what}"
        return [*counter(f"{prefix}_alias_switches_total", f"Times the {self.what} model moved to another version.",
                         self.switches),
                *counter(f"{prefix}_version_load_failures_total",
                         f"Versions of the {self.what} alias that failed to load (the old one kept serving).",
                         self.load_failures),
                *counter(f"{prefix}_alias_poll_failures_total", "Registry lookups of the alias that failed.",
                         self.poll_failures)]

    # --- the alias ---
    def check(self) -> bool:
        """One look at the alias; True when the served version changed."""
        try:
            version = self._resolve()
        except Exception as exc:  # noqa: BLE001  (a registry that does not answer: keep serving what we have)
            self.poll_failures += 1
            log.warning("%s: could not read alias %s of %s (%s); still serving version %s", self.what, self.alias,
                        self.name, cause(exc), self._served.version if self._served else "none")
            return False
        serving = self._served.version if self._served is not None else None
        if not version or version in (self._failed, serving):
            return False
        try:
            self._switch(version)
        except Exception as exc:  # noqa: BLE001  (a broken version must not take the server down)
            self.load_failures, self._failed = self.load_failures + 1, version
            log.warning("%s: version %s of %s (alias %s) failed to load (%s); still serving version %s", self.what,
                        version, self.name, self.alias, str(cause(exc)).splitlines()[0],
                        self._served.version if self._served else "none")
            return False
        return True

    def _resolve(self) -> str:
        """The version the alias holds now ("" for a pinned URI or, when not required, an alias holding none)."""
        if not self.alias:
            return ""
        if not self.required:
            try:
                return str(mlflow.MlflowClient().get_model_version_by_alias(self.name, self.alias).version)
            except mlflow.exceptions.MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                    return ""
                raise
        resolved = classifiers.registered_version(self.model_uri)  # PipelineError when the alias does not resolve
        return resolved[1] if resolved else ""

    def _switch(self, version: str, first: bool = False) -> None:
        """Load `version` beside the one serving, swap, then close the old one (a batch still scoring with it keeps
        its loaded weights: closing only removes the downloaded files)."""
        uri = f"models:/{self.name}/{version}" if version else self.model_uri
        stack = contextlib.ExitStack()
        try:
            model = stack.enter_context(self._load(uri))
        except BaseException:
            stack.close()
            raise
        pinned = ("", "") if self.alias else classifiers.registered_version(self.model_uri) or ("", "")
        info = {"model_uri": self.model_uri, "registered_model": self.name or pinned[0],
                "version": version or pinned[1]}
        with self._lock:
            old, old_served = self._stack, self._served
            self._stack, self._served = stack, Served(model, info)
        if old is not None:
            old.close()
        if not first:
            self.switches += 1
        log.info("%s: now %s (alias %s)%s", self.what, uri, self.alias or "none",
                 f", was version {old_served.version}" if old_served else "")

    def _poll(self) -> None:
        while not self._stopped.wait(self.poll_s):
            self.check()
