"""`train --threads`: the count a run trains with, kept on resume, and a warning when threads
outnumber the cores the process may use."""

import json
import signal

import pytest
import torch

import noisecli.engine.device as device
from noisecli.spec import load_spec
from noisecli.trainer import Trainer


def test_oversubscription_is_said_with_the_count_that_fits(monkeypatch):
    monkeypatch.setattr(device, "available_cores", lambda: 2)
    assert device.oversubscribed(2) is None and device.oversubscribed(1, 2) is None
    assert device.oversubscribed(4) == ("warning: 4 torch threads x 1 process on 2 available cores: oversubscribed "
                                        "threads make every step many times slower; use --threads 2")
    assert device.oversubscribed(2, 2).endswith("use --threads 1")


def test_train_threads_is_recorded_warned_about_and_kept_on_resume(tiny_spec, tmp_path, cli, monkeypatch,
                                                                   three_threads):
    before = torch.get_num_threads()
    monkeypatch.setattr(device, "available_cores", lambda: 1)
    code, out, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "runs", "--threads", "2", "-q")
    assert code == 0, err
    assert "warning: 2 torch threads x 1 process on 1 available core" in err
    status = json.loads((tmp_path / "runs" / "tiny" / "status.json").read_text())
    assert status["threads"] == 2 and torch.get_num_threads() == before  # restored after the run

    # interrupted with 1 thread, resumed asking for 2: the run keeps its 1 (bitwise resume)
    trainer = Trainer(load_spec(tiny_spec), tmp_path / "split", quiet=True).setup()
    real_next, calls = trainer.batches.next, [0]

    def next_batch():
        calls[0] += 1
        if calls[0] == 5:
            trainer.stop.request(signal.SIGINT)
        return real_next()

    trainer.batches.next = next_batch
    trainer.open_run()
    with pytest.raises(Exception):
        with device.run_threads([trainer], 1):
            trainer.train()
    trainer.close()
    code, out, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "split", "--threads", "2")
    assert code == 0, err
    assert "resuming 'tiny' from step 5 of 24 with the 1 thread it started with" in out + err
    assert json.loads((tmp_path / "split" / "tiny" / "status.json").read_text())["threads"] == 1
