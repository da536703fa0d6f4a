"""`noisecli tune`: validate everything before anything is written, record the tune (tune.json),
open its studies, run the workers (here, in processes, or on a cluster), confirm the best of
each kind on fresh seeds, and print the summary. `--status` reads, never trains."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

from noisecli import metrics
from noisecli.errors import Interrupted, RunError, SpecError
from noisecli.sweep_run import worker_threads
from noisecli.tune.spec import TuneSpec, load_tune
from noisecli.tune.study import DEFAULT_STORAGE, JOURNAL, import_optuna, make_pruner, make_sampler, open_storage, \
    open_studies
from noisecli.tune.summary import (check_unchanged, read_recorded, snapshot, storage_label, write_recorded,
                                   write_snapshot)
from noisecli.tune.workers import Payload, run_cluster, run_processes, work_here


@dataclass
class TuneOptions:
    path: Path
    runs_dir: Path = Path("runs")
    trials: int | None = None
    timeout: float | None = None  # minutes
    jobs: int = 1
    storage: str | None = None
    device: str | None = None
    quiet: bool = False
    cluster: object | None = None  # cluster.ClusterOptions for --backend submitit
    max_batch: int | None = None  # --batched: up to this many trials of a study as one stack


def checked(tune: TuneSpec) -> None:
    """What only building can check: the components of the searched specs (python targets, hf
    models: `validate.check_buildable`), the objective measured on this data, Optuna's options."""
    from noisecli.validate import check_buildable  # builds components only for specs that need it

    first = {k: r.ends()[0] for k, r in tune.search.keys.items()}
    specs = [tune.run_spec(kind, {**({"factor": s.factor.ends()[0]} if s.factor else {}), **first}, "trial",
                           tune.seeds[0]) for kind, s in tune.search.kinds.items()]
    check_buildable(specs)
    from noisecli.data import load_dataset  # torch: the data says its task (classification, ...)

    task = load_dataset(specs[0].data).task
    held = [c for c in metrics.columns(task) if c.startswith("val_")] + ["best_val_loss"]
    if tune.objective not in held:
        raise SpecError(f"objective: {tune.objective} is not measured on {task} data (its objectives: "
                        f"{', '.join(held)})")
    make_pruner(tune)
    for kind in tune.studies():
        make_sampler(tune, kind)


def _prepare(tune: TuneSpec, tune_dir: Path, label: str):
    """The tune folder, tune.json and the storage, or SpecError with nothing left behind."""
    if label not in (DEFAULT_STORAGE, JOURNAL):
        open_storage(label, tune_dir)  # a URL that cannot be opened: said before anything is written
    made = [p for p in (tune_dir, *tune_dir.parents) if not p.exists()]  # innermost first
    try:
        tune_dir.mkdir(parents=True, exist_ok=True)
        write_recorded(tune, tune_dir, label)
        storage = open_storage(label, tune_dir)
        return storage, open_studies(tune, storage, create=True)
    except (OSError, SpecError) as e:
        if made:  # a folder this call made: everything in it goes (it held nothing before)
            for name in ("tune.json", "study.db", "journal.log"):
                (tune_dir / name).unlink(missing_ok=True)
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    pass
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"--runs-dir: cannot write {e.filename or tune_dir}: {e.strerror or e}") from None


def search(tune: TuneSpec, o: TuneOptions, label: str) -> None:
    tune_dir = o.runs_dir / tune.name
    deadline = time.time() + o.timeout * 60 if o.timeout is not None else None
    jobs = max(1, o.jobs)
    here = o.cluster is None or o.cluster.cluster != "slurm"  # workers sharing this machine's cores
    threads = worker_threads(jobs, jobs) if jobs > 1 and here else None
    p = Payload(str(Path(o.path).resolve()), o.trials, label, str(tune_dir.resolve()), 0, threads, o.device, deadline,
                o.quiet, o.max_batch)
    if o.cluster is not None:
        run_cluster(p, jobs, o.cluster, tune.name)
    elif jobs > 1:
        run_processes(p, jobs)
        work_here(p)  # a worker that died (killed) left its trial running: resumed here, and what is left
    else:
        results = work_here(p)
        if any(r.state == "interrupted" for r in results):
            raise Interrupted(signal.SIGINT, "tune stopped; the running trial saved its state. Run the same command "
                              "again to resume it and go on with the study")


def run_tune(o: TuneOptions) -> None:
    tune = load_tune(o.path, o.trials)
    tune_dir = o.runs_dir / tune.name
    recorded = read_recorded(tune_dir)
    label = storage_label(o.storage, recorded, JOURNAL if o.cluster is not None else DEFAULT_STORAGE)
    import_optuna()
    check_unchanged(tune, recorded, tune_dir)
    checked(tune)
    _storage, studies = _prepare(tune, tune_dir, label)
    try:
        search(tune, o, label)
    finally:  # also when stopped: trials.json says where the study stands
        data = snapshot(tune, studies, label, with_importance=True)
        write_snapshot(tune_dir, data)
    failures = [t for t in data["trials"] if t["state"] == "fail" and str(t["outcome"]).startswith("failed")]
    try:
        if tune.confirm_seeds and _search_done(data) and any(s["best"] for s in data["studies"].values()):
            from noisecli.tune.confirm import run_confirm  # the sweep's runner, only once the search is done

            run_confirm(tune, tune_dir, data, o.jobs, o.quiet, o.cluster, o.device)
    finally:
        if not o.quiet:
            from noisecli.report.tune import summary_text  # the report's rendering of trials.json

            print(summary_text(tune_dir), end="", flush=True)
    if failures:
        raise RunError(f"{len(failures)} trials failed: {', '.join(str(t['run']) for t in failures[:5])} "
                       f"(their run folders hold error.log)")


def _search_done(data: dict) -> bool:
    """No trial left running or queued: the budget is spent, or --timeout ended the search."""
    return not [t for t in data["trials"] if t["state"] in ("running", "waiting")]


def status(o: TuneOptions) -> str:
    """`tune --status`: every trial's state from the study (nothing is trained or written)."""
    tune = load_tune(o.path, o.trials)
    tune_dir = o.runs_dir / tune.name
    recorded = read_recorded(tune_dir)
    if recorded is None:
        return f"tune {tune.name}: not started ({tune_dir} has no tune.json)\n"
    label = storage_label(o.storage, recorded, DEFAULT_STORAGE)
    studies = open_studies(tune, open_storage(label, tune_dir))
    from noisecli.report.tune import status_lines  # the report's rendering of trials.json

    return status_lines(snapshot(tune, studies, label))
