"""The tracking store: checked once at start-up (seconds, not MLflow's minutes of retries), initialised by one
process at a time, the experiment got-or-created without a race, and locks that hold wherever the processes run:
a file beside a SQLite store, a lease recorded in the store itself for a server or database store."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agnews import vocab
from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 5.0
_checked: set[str] = set()


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    return Path(uri.split("sqlite:///", 1)[-1]).expanduser().resolve()


@contextlib.contextmanager
def lock(uri: str, purpose: str = "store", timeout_s: float = 600) -> Iterator[None]:
    """An inter-process lock of one machine: beside a SQLite file, else in ~/.cache/agnews/locks. For what must
    hold across machines against a server store (a promotion), see `exclusive`."""
    from filelock import FileLock, Timeout

    db = sqlite_path(uri)
    if db is not None:
        path = db.with_name(f"{db.name}.{purpose}.lock")
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agnews" / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha1(uri.encode()).hexdigest()[:16]}.{purpose}.lock"
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield
    except Timeout:
        raise PipelineError(f"waited {timeout_s:.0f} s for the {purpose} lock {path}; another agnews process holds "
                            "it: let it finish, or remove the file if no such process is running") from None


def _check_http(uri: str) -> None:
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        answer = requests.get(url, timeout=CHECK_TIMEOUT_S)
    except requests.RequestException as exc:
        raise PipelineError(f"tracking server {uri} is unreachable ({cause(exc)}); start it "
                            "(mlflow server ...) or fix MLFLOW_TRACKING_URI") from None
    if answer.status_code != 200:
        raise PipelineError(f"tracking server {uri} answered HTTP {answer.status_code} at /health; check that "
                            "MLFLOW_TRACKING_URI points at an MLflow server") from None


def _check_sqlite(uri: str, db: Path) -> None:
    if not db.parent.is_dir():
        raise PipelineError(f"tracking store {uri}: folder {db.parent} does not exist; create it or fix "
                            "MLFLOW_TRACKING_URI")
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise PipelineError(f"tracking store {uri} is not writable; fix its permissions or MLFLOW_TRACKING_URI")


def check(uri: str) -> None:
    """Reachable, writable and initialised, or one PipelineError naming the URI and what to check."""
    if uri in _checked:
        return
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        _check_http(uri)
    elif db is not None:
        _check_sqlite(uri, db)
    try:
        # A new SQLite file gets its schema here; two processes creating it at once collide
        # ("table ... already exists"), so one creates it while the others wait.
        with lock(uri) if db is not None else contextlib.nullcontext():
            MlflowClient(uri).search_experiments(max_results=1)
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"tracking store {uri} cannot be used ({cause(exc)}); check "
                            "MLFLOW_TRACKING_URI") from None
    _checked.add(uri)


def experiment_id(name: str) -> str:
    """Get or create `name`; a second process creating it at the same moment gets the same id."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    with lock(uri, "experiment"):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name)
            except MlflowException as exc:  # created meanwhile by a process on another machine
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise PipelineError(f"experiment {name!r} is deleted; restore it (mlflow experiments restore "
                            f"--experiment-id {experiment.experiment_id}) or pass --experiment-name <another>")
    return experiment.experiment_id


# --- a lock that holds across machines --------------------------------------------------------------------------

LEASE_TTL_S = 900.0  # a compare holds it from reading the champion to moving the alias: seconds to a few minutes
LEASE_MARGIN_S = 60.0  # `verify` refuses a lease with less than this left: the alias write must end well before
LEASE_OWNER, LEASE_EXPIRES = vocab.LEASE_OWNER, vocab.LEASE_EXPIRES


@dataclass(frozen=True)
class Holder:
    owner: str
    expires: float  # epoch seconds, by the holder's clock (TTL_S dwarfs the skew of machines kept by NTP)
    created_ms: int


class Lease:
    """A lease recorded in the store: a registered model named `name`, created as the lock. The store's unique name
    makes creation atomic (SQLite, PostgreSQL and MySQL alike, directly or through an MLflow server), so two
    processes anywhere never both hold it. Tags record the holder and the expiry; `release` deletes it. A holder
    that died leaves it until it expires, when a waiter removes it. `verify` re-reads it (ours, not about to expire)
    and extends it: call it right before the write the lease protects."""

    def __init__(self, name: str, ttl_s: float = LEASE_TTL_S, poll_s: float = 1.0, client=None):
        from mlflow import MlflowClient

        self.name, self.ttl_s, self.poll_s = name, ttl_s, poll_s
        self.client = client or MlflowClient()
        self.owner = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"

    def holder(self) -> Holder | None:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        tags = model.tags or {}
        try:
            expires = float(tags.get(LEASE_EXPIRES, ""))
        except ValueError:  # created but not yet tagged (a store without tags on create): counts from creation
            expires = model.creation_timestamp / 1000 + self.ttl_s
        return Holder(tags.get(LEASE_OWNER, "unknown"), expires, int(model.creation_timestamp or 0))

    def _try_create(self) -> bool:
        from mlflow.exceptions import MlflowException

        tags = {LEASE_OWNER: self.owner, LEASE_EXPIRES: f"{time.time() + self.ttl_s:.3f}"}
        try:
            self.client.create_registered_model(self.name, tags=tags, description=(
                "agnews lease: held while a compare reads the champion, decides and moves the alias; deleted when "
                "it ends. Delete it by hand only if its holder is gone."))
            return True
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return False
            raise

    def _break_if_expired(self, seen: Holder) -> None:
        """Remove a lease whose holder let it expire (it died, or hung); only the one seen, not a newer one."""
        now = self.holder()
        if now is not None and now == seen and now.expires < time.time():
            log.warning("removing the expired lease %s of %s", self.name, seen.owner)
            with contextlib.suppress(Exception):  # another waiter removed it first
                self.client.delete_registered_model(self.name)

    def acquire(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._try_create():
            seen = self.holder()
            if seen is not None and seen.expires < time.time():
                self._break_if_expired(seen)
                continue
            if time.monotonic() > deadline:
                who = seen.owner if seen else "a process that just released it"
                raise PipelineError(f"waited {timeout_s:.0f} s for the lease {self.name!r} held by {who}; let it "
                                    "finish, or delete that registered model if its holder is gone")
            time.sleep(self.poll_s)

    def verify(self) -> None:
        """Still ours with time left, else one PipelineError (nothing may be written under a lost lease)."""
        held = self.holder()
        if held is None or held.owner != self.owner or held.expires - time.time() < LEASE_MARGIN_S:
            raise PipelineError(f"the lease {self.name!r} was lost (expired after {self.ttl_s:.0f} s, or removed); "
                                "nothing was moved: re-run compare")
        self.client.set_registered_model_tag(self.name, LEASE_EXPIRES, f"{time.time() + self.ttl_s:.3f}")

    def release(self) -> None:
        held = self.holder()
        if held is not None and held.owner == self.owner:
            self.client.delete_registered_model(self.name)


class _FileHold:
    """What `exclusive` yields on a SQLite store: the file lock beside the database is held (every process that can
    open the store shares its file system), nothing can be lost before the write."""

    def verify(self) -> None:
        pass


@contextlib.contextmanager
def exclusive(name: str, timeout_s: float = 600) -> Iterator[Lease | _FileHold]:
    """Held by one process at a time against this store, wherever the processes run: a file lock beside a SQLite
    store, else a `Lease` (the registered model `<name>.lease`) recorded in the store. Call `.verify()` on what it
    yields right before the write it protects."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if sqlite_path(uri) is not None:
        with lock(uri, "".join(c if c.isalnum() or c in "-_." else "_" for c in name), timeout_s):
            yield _FileHold()
        return
    lease = Lease(f"{name}.lease")
    lease.acquire(timeout_s)
    try:
        yield lease
    finally:
        with contextlib.suppress(Exception):  # an unreachable store must not hide the step's own error
            lease.release()
