"""The training engine: what one run's steps and evaluations are made of.

    device.py      which device, which precision (autocast, the fp16 loss scaler)
    optim.py       the learning-rate schedule, the loss, AdamW's parameter groups, clipping
    state.py       the declared training state: step, interval sums by name, rows, best
    step.py        the one training step (the noise hook sequence) and its strategies:
                   one process, and DDP under torchrun
    stacked.py     the stacked strategy for `sweep --batched` (vmap over K members)
    evaluation.py  an evaluation's named sums, the row built from them, divergence
    session.py     the run folder as a run sees it: claim, tracker, status, failures
    loop.py        step until done, evaluate on the cadence, stop and save on request

`trainer.Trainer` assembles one run from these; `batched` assembles a stack of them.
"""
