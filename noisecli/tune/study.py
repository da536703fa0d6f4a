"""A tune's studies in Optuna's storage: which storage (a SQLite file in the tune folder by
default, any RDB URL, or a journal file), one study per noise kind with its sampler and pruner,
the budget each has spent, and trials whose worker is gone (failed and queued again, so that
the same run folder is resumed).

A trial's run folder is named once, when the trial is first asked for, and kept in its user
attributes (`run`); a retry (Optuna's `RetryHeartbeatStaleTrialCallback`, or a trial saved on
Ctrl-C) copies them, so the retried trial resumes that folder. The budget counts distinct run
folders: a trial retried twice is one trial spent.
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

from noisecli.errors import SpecError
from noisecli.runs import first_line
from noisecli.spec import suggest
from noisecli.tune.spec import TuneSpec

HEARTBEAT_S, GRACE_S = 20, 90  # RDB storages: a trial whose heartbeat is 90 s old is taken as dead
DEFAULT_STORAGE = "sqlite"  # runs/<name>/study.db
JOURNAL = "journal"  # runs/<name>/journal.log


def import_optuna():
    """optuna, quiet (its INFO lines and experimental-feature warnings are not ours to print)."""
    try:
        import optuna
    except ImportError:
        raise SpecError("tune: needs optuna, which is not installed; pip install 'noisecli[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    # ask/tell has no heartbeat thread of its own; trial.Heartbeat is ours
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def masked(url: str) -> str:
    """A URL with its password hidden, as tune.json and messages show it."""
    if url in (DEFAULT_STORAGE, JOURNAL):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: said by open_storage
        return url


def open_storage(label: str, tune_dir: Path):
    """The storage object for `label` (sqlite, journal or a URL); SpecError in one line when it
    cannot be opened (a bad URL, a server that does not answer, a missing driver)."""
    optuna = import_optuna()
    if label == JOURNAL:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(str(tune_dir / "journal.log")))
        except OSError as e:
            raise SpecError(f"--storage journal: cannot open {tune_dir / 'journal.log'}: {e.strerror or e}") from None
    url = f"sqlite:///{tune_dir / 'study.db'}" if label == DEFAULT_STORAGE else label
    sqlite = url.startswith("sqlite")
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, heartbeat_stale_trial_callback=retry)
    except ImportError as e:
        raise SpecError(f"--storage {masked(url)}: its database driver is not installed ({first_line(e, 100)}); "
                        "for PostgreSQL: pip install 'noisecli[tune]' (psycopg)") from None
    except Exception as e:  # noqa: BLE001 - sqlalchemy's and the server's errors: one line
        why = first_line(e, 160)
        if "ArgumentError" in why:
            why = "not a database URL such as postgresql://USER@HOST/DB or sqlite:///FILE, nor `journal`"
        raise SpecError(f"--storage {masked(url)}: cannot open it: {why}") from None


# ---------------------------------------------------------------- samplers and pruners


def _checked(cls, given: dict, where: str, fixed: dict | None = None):
    """Optuna's `cls` built with the spec's options; an option it does not take, or a value it
    refuses, is one line under `where`."""
    options = {k: v for k, v in given.items() if k != "kind"}
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "search_space")]
    for key in options:
        if key not in names:
            raise SpecError(f"{where}.{key}: not an option of Optuna's {cls.__name__}{suggest(key, names) or ''} "
                            f"(its options: {', '.join(names)})")
    try:
        return cls(**{**(fixed or {}), **options})
    except (TypeError, ValueError) as e:
        raise SpecError(f"{where}: Optuna's {cls.__name__} refuses {options}: {first_line(e, 120)}") from None


def make_pruner(tune: TuneSpec):
    optuna = import_optuna()
    classes = {"asha": optuna.pruners.SuccessiveHalvingPruner, "hyperband": optuna.pruners.HyperbandPruner,
               "median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}
    return _checked(classes[tune.pruner["kind"]], tune.pruner, "pruner")


def _grid_sampler(optuna):
    class Grid(optuna.samplers.GridSampler):
        """Optuna's GridSampler, for ask/tell: its `study.stop()` once the grid is spent is for
        Study.optimize (it raises outside it); the study's budget, capped at the grid, stops a tune."""

        def after_trial(self, study, trial, state, values) -> None:
            try:
                super().after_trial(study, trial, state, values)
            except RuntimeError:
                pass

    return Grid


def make_sampler(tune: TuneSpec, kind: str, worker: int = 0, history: int = 0):
    """The study's sampler, seeded by the study, the worker and the trials the study holds already
    (two workers with one seed would draw the same configurations at once, and so would a rerun
    whose first random draw repeated the first run's); TPE multivariate, its random start-up at
    most half of the study's budget."""
    optuna = import_optuna()
    s = tune.sampler
    seed = int(s.get("seed", 0)) + tune.studies().index(kind) + 1000 * worker + 100_003 * history
    if s["kind"] == "grid":
        return _checked(_grid_sampler(optuna), {**s, "seed": seed}, "sampler",
                        {"search_space": tune.grid_space(kind)})
    if s["kind"] == "tpe":
        startup = max(1, min(10, tune.budgets()[kind] // 2))
        return _checked(optuna.samplers.TPESampler, {"seed": seed, **s}, "sampler",
                        {"multivariate": True, "n_startup_trials": startup})
    cls = {"gp": optuna.samplers.GPSampler, "random": optuna.samplers.RandomSampler}[s["kind"]]
    return _checked(cls, {"seed": seed, **s}, "sampler")


def study_name(tune: TuneSpec, kind: str) -> str:
    return f"{tune.name}/{kind}"


def open_studies(tune: TuneSpec, storage, worker: int = 0, create: bool = False) -> dict[str, Any]:
    """{kind: optuna.Study}, created if `create` (the command's process, before any worker)."""
    optuna = import_optuna()
    pruner = make_pruner(tune)
    studies = {}
    for kind in tune.studies():
        if create:
            studies[kind] = optuna.create_study(storage=storage, study_name=study_name(tune, kind),
                                                sampler=make_sampler(tune, kind), pruner=pruner,
                                                direction=tune.direction, load_if_exists=True)
        else:
            name = study_name(tune, kind)
            history = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
            studies[kind] = optuna.load_study(study_name=name, storage=storage, pruner=pruner,
                                              sampler=make_sampler(tune, kind, worker, history))
    return studies


# ---------------------------------------------------------------- the budget and dead workers


def runs_spent(study) -> set[str]:
    """The run folders this study's trials were given (one per trial spent, retries included once)."""
    return {t.user_attrs["run"] for t in study.get_trials(deepcopy=False) if "run" in t.user_attrs}


def waiting(study) -> bool:
    optuna = import_optuna()
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def worker_note() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def retry(study, trial) -> None:
    """Queue the trial again with its parameters and user attributes (its run folder), as Optuna's
    heartbeat retry does."""
    optuna = import_optuna()
    optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)


def fail_and_retry(study, trial, why: str) -> bool:
    """Mark a running trial failed and queue it again; False when another process got there first."""
    optuna = import_optuna()
    try:
        study._storage.set_trial_user_attr(trial._trial_id, "stopped", why)  # (Optuna's own helpers use _storage)
        if not study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL):
            return False
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False
    retry(study, study._storage.get_trial(trial._trial_id))
    return True


def recover(study) -> int:
    """Trials left running by a dead worker, failed and queued again: by Optuna's heartbeat (RDB
    storages, any machine), and at once for a worker on this machine whose process is gone
    (any storage; the journal has no heartbeat). The number recovered here."""
    optuna = import_optuna()
    optuna.storages.fail_stale_trials(study)
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") == host and w.get("pid") != os.getpid() and not _alive(w.get("pid")):
            n += fail_and_retry(study, t, f"its worker (pid {w.get('pid')}) died; queued again to resume")
    return n


class Heartbeat:
    """The trial's heartbeat while it trains (ask/tell has no thread of its own; Study.optimize does)."""

    def __init__(self, study, trial):
        storage = study._storage  # (Optuna's fail_stale_trials reads the heartbeat there too)
        beat = getattr(storage, "record_heartbeat", None)
        on = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
        self.beat = (lambda: beat(trial._trial_id)) if on and beat else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a lost connection: the next beat tries again
                pass
            if self.stop.wait(HEARTBEAT_S):
                return

    def __enter__(self) -> "Heartbeat":
        if self.beat:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.beat:
            self.stop.set()
            self.thread.join()
