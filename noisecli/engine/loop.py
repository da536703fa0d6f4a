"""The loop, for one run and for a stack alike: step until the last step, evaluate on the
cadence, and stop after a step when asked. The driver (a Trainer, or a stack of them)
provides `step`, `total_steps`, `eval_every`, `train_step()`, `advance()` (the progress
bars) and `evaluate(lr, factors, seconds)`; what a stop means (save and raise, or save each
member) is the driver's."""

from __future__ import annotations

import time
from typing import Callable

from noisecli.engine.evaluation import evaluation_due


def train_until_done(driver, stop_requested: Callable[[], bool]) -> float | None:
    """Train to the driver's last step; None when it got there, else the seconds since the last
    evaluation when a stop was asked for (every rank asks `stop_requested` the same number of
    times under torchrun, so that they agree on the step they stop after)."""
    tick = time.perf_counter()
    stopped = False
    while driver.active and driver.step < driver.total_steps:
        if stop_requested():
            stopped = True
            break
        lr, factors = driver.train_step()
        driver.advance()
        if evaluation_due(driver.step, driver.eval_every, driver.total_steps):
            driver.evaluate(lr, factors, time.perf_counter() - tick)
            tick = time.perf_counter()
    if stopped or stop_requested():  # also: asked during the last step
        return time.perf_counter() - tick
    return None
