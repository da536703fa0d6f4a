"""`noisecli tune`: "how much noise?" searched with Optuna instead of a grid.

    spec      the tune spec: base, objective, seeds, trials, pruner, sampler, confirm (search.py: `search`)
    study     Optuna's storage and one study per noise kind: samplers, pruners, budget, dead workers
    trial     one worker: ask, train a trial's run folders (pruned at evaluations), tell
    stack     --batched: the trials asked at once trained as one stack
    workers   where the workers run: here, in processes, or as submitit array tasks
    summary   tune.json (the definition, to refuse a changed spec) and trials.json (what report reads)
    confirm   the best of each kind and none retrained on fresh seeds, as a sweep's points
    run       the command: validate, record, search, confirm, summarize; --status

Nothing here is imported by `noisecli --help`; optuna only when the command runs, torch only
where a worker trains.
"""
