"""`sweep --batched`: members of a stack train as their points do alone (every kind, every
batchable model), clip and step on their own, drop out when they diverge, save on Ctrl-C,
resume as a stack or alone, and write ordinary run folders."""

import json
import signal
from types import SimpleNamespace

import pytest
import torch

from noisecli.batched import Stack, train_group
from noisecli.catalog import NOISE
from noisecli.spec import spec_from_dict, spec_to_dict
from noisecli.stacks import batch_key
from noisecli.sweep import form_groups, load_plan
from noisecli.noise.params import FlatNoise, StackedDraws
from noisecli.points import train_point
from tests.conftest import assert_same_curves, metrics_rows, write_spec

TABLE = {"data": {"kind": "digits", "train_size": 96}, "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
         "device": "cpu"}
TEXT = {"data": {"kind": "markov", "block_size": 16, "n_tokens": 3000},
        "train": {"max_steps": 16, "eval_every": 8, "batch_size": 8, "lr": 3e-3, "eval_batches": 2},
        "device": "cpu"}
LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 16}
MODELS = {"linear": {"kind": "linear"}, "mlp": {"kind": "mlp", "hidden": [32, 32]},
          "cnn": {"kind": "cnn", "channels": [4, 8]}, "gpt": {"kind": "gpt", "n_layer": 2, "n_embd": 32, "n_head": 2},
          # transformers models built from configs (no download), dropout off: masks drawn under vmap differ
          "llama": {"kind": "hf", "config": LLAMA, "dropout": 0.0},
          "gpt2": {"kind": "hf", "config": GPT2, "dropout": 0.0, "gradient_checkpointing": True}}
FACTORS = {"none": 0.0, "input": 0.3, "weight": 0.05, "anticorrelated": 0.05, "gradient": 0.01, "activation": 0.3,
           "token": 0.2, "embedding": 5.0}
TABLE_KINDS = ["none", "input", "weight", "anticorrelated", "gradient", "activation"]
TEXT_KINDS = ["none", "token", "embedding", "weight", "anticorrelated", "gradient", "activation"]
CASES = ([(m, k) for m in ("linear", "mlp", "cnn") for k in TABLE_KINDS if not (m == "linear" and k == "activation")]
         + [("gpt", k) for k in TEXT_KINDS]
         # every kind runs under vmap over both architectures (checked once by hand); here the
         # kinds that act inside the forward (embedding, activation) and on the weights. (gpt2's
         # weight noise ends one bias element 1e-4 from its point alone in fp32: AdamW's
         # lr * g / (|g| + eps) on a gradient near 0 magnifies summation order; see docs/cost.md)
         + [("llama", "embedding"), ("llama", "weight"), ("gpt2", "activation"), ("gpt2", "token")])


def specs_for(model: str, kind: str, factors=None, seeds=(0, 1)) -> list:
    base = TEXT if model in ("gpt", "llama", "gpt2") else TABLE
    factors = factors or ([0.0, FACTORS[kind]] if kind != "none" else [0.0])
    return [spec_from_dict({**base, "name": f"{model}-{kind}-f{i}-{s}", "seed": s, "model": MODELS[model],
                            "noise": {"kind": kind, "factor": f}}) for i, f in enumerate(factors) for s in seeds]


rows = metrics_rows


def assert_close_rows(a, b):
    assert_same_curves(b, a, rel=1e-3)


def test_every_kind_is_batched_here():
    assert set(TABLE_KINDS) | set(TEXT_KINDS) == set(NOISE)


@pytest.mark.parametrize("model,kind", CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_each_member_trains_as_its_point_alone(tmp_path, model, kind):
    specs = specs_for(model, kind)
    outcomes = train_group(specs, tmp_path / "batched", lambda *a: None)
    assert [o.state for o in outcomes] == ["completed"] * len(specs)
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))
        a = torch.load(tmp_path / "batched" / spec.name / "checkpoints" / "last.pt", weights_only=True)
        b = torch.load(tmp_path / "alone" / spec.name / "checkpoints" / "last.pt", weights_only=True)
        for key in b["model"]:
            torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-3, atol=1e-4)
        # an ordinary run folder: each tensor saved on its own (not a view of the whole stack)
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in a["model"].values())
        assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


@pytest.mark.parametrize("how", [{"fused": True}, {"foreach": True}])
def test_adamw_on_stacked_tensors_is_one_adamw_per_member(how):
    torch.manual_seed(0)
    members = [torch.randn(5, 3) for _ in range(4)]
    grads = [[torch.randn(5, 3) for _ in range(4)] for _ in range(6)]
    stacked = torch.stack(members).requires_grad_()
    alone = [m.clone().requires_grad_() for m in members]
    opt_stack = torch.optim.AdamW([stacked], lr=1e-2, weight_decay=0.1, **how)
    opts = [torch.optim.AdamW([p], lr=1e-2, weight_decay=0.1, **how) for p in alone]
    for step_grads in grads:
        stacked.grad = torch.stack(step_grads)
        opt_stack.step()
        for p, opt, g in zip(alone, opts, step_grads):
            p.grad = g
            opt.step()
    for k, p in enumerate(alone):
        assert torch.equal(stacked[k].detach(), p.detach())


def test_stacked_draws_are_each_members_own_draws():
    """A parameter kind's stacked form draws row k from member k's generator: bitwise the draw its
    FlatNoise makes alone; a member at std 0, or without the entry, draws nothing (its generator is
    left where it was) and adds zeros."""
    shapes = [(3, 4), (5,), (2, 2, 2)]
    members = [SimpleNamespace(generator=torch.Generator().manual_seed(k)) for k in range(4)]
    members[1] = None
    views = StackedDraws([torch.zeros(4, *s) for s in shapes]).normal(members, [0.5, 0.7, 0.0, 2.0])
    for k, std in ((0, 0.5), (3, 2.0)):
        alone = FlatNoise([torch.zeros(s) for s in shapes]).normal(torch.Generator().manual_seed(k), std)
        assert all(torch.equal(v[k], a) for v, a in zip(views, alone))
    assert all(not v[1].any() and not v[2].any() for v in views)
    assert torch.equal(members[2].generator.get_state(), torch.Generator().manual_seed(2).get_state())


def test_stacked_draws_spread_over_threads_are_still_each_members_own():
    """Large rows are drawn on torch's threads, a share of the members each: the same values."""
    shapes = [(300, 64), (64,)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        members = [SimpleNamespace(generator=torch.Generator().manual_seed(k)) for k in range(5)]
        views = StackedDraws([torch.zeros(5, *s) for s in shapes]).normal(members, [0.1, 0.2, 0.0, 0.4, 0.5])
    finally:
        torch.set_num_threads(before)
    for k, std in enumerate([0.1, 0.2, 0.0, 0.4, 0.5]):
        if std:
            alone = FlatNoise([torch.zeros(s) for s in shapes]).normal(torch.Generator().manual_seed(k), std)
            assert all(torch.equal(v[k], a) for v, a in zip(views, alone))
    assert not any(v[2].any() for v in views)


@pytest.mark.parametrize("kind", ["weight", "gradient"])
def test_parameter_kinds_act_once_on_the_stacked_tensors(tmp_path, kind):
    """weight and gradient noise are one call on the stack's tensors (their stacked form), not a
    call per member; gradient noise then needs no per-member .grad views."""
    from noisecli.trainer import Trainer

    trainers = [Trainer(spec, tmp_path, quiet=True).setup() for spec in specs_for("mlp", "none", seeds=(0,))
                + specs_for("mlp", kind)]
    for t in trainers:
        t.open_run()
    strategy = Stack(trainers, trainers[0].stop).strategy
    assert list(strategy.hooks.forms) == [0] and not strategy.bind_grads
    assert strategy.hooks.forms[0].noises[0] is None  # the none member, first, has no entry


def test_clipping_is_per_member(tmp_path):
    """One member's huge gradient is clipped to the max norm; the others are left as they are,
    exactly as clip_grad_norm_ does for each point alone."""
    specs = specs_for("mlp", "none", seeds=(0, 1, 2))
    trainers = []
    for spec in specs:
        from noisecli.trainer import Trainer

        trainer = Trainer(spec, tmp_path, quiet=True).setup()
        trainer.open_run()
        trainers.append(trainer)
    stack = Stack(trainers, trainers[0].stop)
    torch.manual_seed(1)
    grads = {n: torch.randn_like(p) * 1e-3 for n, p in stack.strategy.P.items()}
    for g in grads.values():
        g[1] *= 1e6  # member 1 only
    for n, p in stack.strategy.P.items():
        p.grad = grads[n].clone()
    norms = stack.strategy.clip()  # train.grad_clip: 1.0
    for k in range(3):  # clip_grad_norm_ on each member's gradients alone
        alone = [grads[n][k].clone() for n in stack.strategy.names]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in alone]
        for p, g in zip(params, alone):
            p.grad = g
        expected = torch.nn.utils.clip_grad_norm_(params, 1.0)
        assert norms[k].item() == pytest.approx(expected.item(), rel=1e-5)
        for n, p in zip(stack.strategy.names, params):
            torch.testing.assert_close(stack.strategy.P[n].grad[k], p.grad)
    assert norms[1] > 1e2 and norms[0] < 1 and norms[2] < 1
    for t in trainers:
        t.close()


def test_a_diverging_member_is_masked_out_and_the_others_go_on(tmp_path):
    specs = specs_for("mlp", "weight", factors=[0.0, 1e20], seeds=(0, 1))
    outcomes = {o.name: o for o in train_group(specs, tmp_path / "batched", lambda *a: None)}
    for spec in specs:
        status = json.loads((tmp_path / "batched" / spec.name / "status.json").read_text())
        if spec.noise[0].factor > 1:
            assert outcomes[spec.name].state == "diverged" and status["state"] == "diverged"
            assert "non-finite loss or gradient" in status["error"]
            # no checkpoint holds the non-finite state (it diverged by the first evaluation: none at all)
            for ckpt in (tmp_path / "batched" / spec.name / "checkpoints").glob("*.pt"):
                state = torch.load(ckpt, weights_only=True)
                assert all(torch.isfinite(t).all() for t in state["model"].values())
        else:
            assert outcomes[spec.name].state == "completed" and status["state"] == "completed"
            train_point(spec, tmp_path / "alone", lambda *a: None)
            assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))


def test_none_members_go_on_when_every_noise_member_has_left(tmp_path):
    """The stack rebuilt without its noise members (here: diverged) has none members alone: they
    finish as their points alone (the weight form is not rebuilt for members that have no entry)."""
    specs = specs_for("mlp", "none") + specs_for("mlp", "weight", factors=[1e20])
    outcomes = {o.name: o.state for o in train_group(specs, tmp_path / "batched", lambda *a: None)}
    assert outcomes == {s.name: "completed" if s.noise[0].kind == "none" else "diverged" for s in specs}
    for spec in specs[:2]:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))


def stop_after(monkeypatch, steps: int):
    """A SIGINT arrives during the stack's step number `steps`."""
    real = Stack.train_step
    calls = [0]

    def step(self):
        calls[0] += 1
        if calls[0] == steps:
            self.stop.request(signal.SIGINT)
        return real(self)

    monkeypatch.setattr(Stack, "train_step", step)


def test_ctrl_c_saves_every_member_and_the_stack_resumes(tmp_path, monkeypatch):
    specs = specs_for("mlp", "weight", seeds=(0, 1))
    whole = train_group(specs, tmp_path / "whole", lambda *a: None)
    assert {o.state for o in whole} == {"completed"}
    with monkeypatch.context() as m:
        stop_after(m, 9)
        outcomes = train_group(specs, tmp_path / "split", lambda *a: None)
    assert [o.state for o in outcomes] == ["interrupted"] * 4
    for spec in specs:
        status = json.loads((tmp_path / "split" / spec.name / "status.json").read_text())
        assert status["state"] == "interrupted" and status["step"] == 9
    outcomes = train_group(specs, tmp_path / "split", lambda *a: None)
    assert [o.state for o in outcomes] == ["completed"] * 4
    for spec in specs:  # resumed as a stack: the same numbers as the uninterrupted stack, bitwise
        def untimed(rs):
            return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rs]

        assert untimed(rows(tmp_path / "split" / spec.name)) == untimed(rows(tmp_path / "whole" / spec.name))


def test_a_member_resumes_or_retrains_alone_with_train(tmp_path, monkeypatch, cli):
    specs = specs_for("mlp", "anticorrelated", seeds=(0, 1))
    with monkeypatch.context() as m:
        stop_after(m, 5)
        train_group(specs, tmp_path / "runs", lambda *a: None)
    spec = specs[3]
    path = write_spec(tmp_path, spec_to_dict(spec))
    code, _, err = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    train_point(spec, tmp_path / "alone", lambda *a: None)
    assert_close_rows(rows(tmp_path / "runs" / spec.name), rows(tmp_path / "alone" / spec.name))
    status = json.loads((tmp_path / "runs" / spec.name / "status.json").read_text())
    assert status["state"] == "completed" and status["starts"] == 2 and "sweep --batched" in status["batched"]
    code, out, _ = cli("eval", tmp_path / "runs" / spec.name, "--format", "json")
    assert code == 0 and json.loads(out)["val_loss"] == pytest.approx(rows(tmp_path / "runs" / spec.name)[-1]["val_loss"],
                                                                      rel=1e-5)


SWEEP = {"name": "sw", "base": {**TABLE, "model": MODELS["mlp"], "noise": {"kind": "input", "factor": 0.1}},
         "grid": {"noise.factor": [0.0, 0.1, 0.2]}, "seeds": 2}


def test_batched_sweep_from_the_command_line_with_jobs_and_max_batch(tmp_path, cli):
    spec = write_spec(tmp_path, SWEEP)
    code, out, err = cli("sweep", spec, "--runs-dir", tmp_path / "seq", "--quiet")
    assert code == 0, err
    code, out, err = cli("sweep", spec, "--runs-dir", tmp_path / "bat", "--batched", "--max-batch", "4", "--jobs", "2")
    assert code == 0, err
    assert "sweep sw: 6 completed" in out
    plan = load_plan(spec)
    sizes = sorted(json.loads((tmp_path / "bat" / "sw" / p.name / "status.json").read_text())["batched"]
                   for p in plan.points)
    assert sizes == ["trained in a stack of 2 points (sweep --batched)"] * 2 + \
        ["trained in a stack of 4 points (sweep --batched)"] * 4
    for p in plan.points:
        assert_close_rows(rows(tmp_path / "bat" / "sw" / p.name), rows(tmp_path / "seq" / "sw" / p.name))
    code, report_bat, _ = cli("report", tmp_path / "bat" / "sw", "--format", "csv")
    code2, report_seq, _ = cli("report", tmp_path / "seq" / "sw", "--format", "csv")
    assert code == code2 == 0 and report_bat.splitlines()[0] == report_seq.splitlines()[0]
    code, out, _ = cli("sweep", spec, "--runs-dir", tmp_path / "bat", "--batched")
    assert code == 0 and "6 skipped" in out  # a rerun skips what is done


def test_points_that_cannot_be_stacked_train_alone_with_one_line_why(tmp_path, cli):
    (tmp_path / "my_model.py").write_text(
        "import torch\n\ndef build(n_inputs, n_outputs):\n    return torch.nn.Linear(n_inputs, n_outputs)\n")
    sweep = {**SWEEP, "base": {**SWEEP["base"], "model": {"kind": "python", "target": "my_model.py:build"}}}
    spec = write_spec(tmp_path, sweep)
    code, out, err = cli("sweep", spec, "--runs-dir", tmp_path / "runs", "--batched")
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("--batched:")]
    assert notes == ["--batched: 6 points (factor-none_seed-0, ...): model.kind python: trained one after another "
                     "(its forward is not known to run under torch.func.vmap)"]
    assert "6 completed" in out


def test_hf_models_stack_by_architecture_and_the_rest_say_why_they_train_alone(tmp_path):
    def key(model):
        return batch_key(spec_from_dict({**TEXT, "model": model, "noise": {"kind": "embedding", "factor": 5.0}}))

    assert key(MODELS["llama"])[0] is not None and key(MODELS["gpt2"])[0] is not None
    opt = {"model_type": "opt", "hidden_size": 16, "ffn_dim": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "word_embed_proj_dim": 16}
    assert key({"kind": "hf", "config": opt}) == (None, "model.kind hf (model type 'opt'): trained one after another "
                                                  "(stacks are verified for gpt2, gpt_neox, llama, mistral, qwen2: "
                                                  "each member trains as its point alone)")
    folder = tmp_path / "saved"  # a model folder: its config.json says the architecture
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", **LLAMA}))
    spec = spec_from_dict({**TEXT, "model": {"kind": "hf", "path": str(folder)}})
    assert batch_key(spec)[0] is not None
    (folder / "config.json").write_text(json.dumps({**opt, "model_type": "opt"}))
    assert "model type 'opt'" in batch_key(spec)[1]


def test_groups_follow_the_plan_and_max_batch(tmp_path):
    spec = write_spec(tmp_path, {**SWEEP, "grid": {"noise.factor": [0.0, 0.1], "noise.kind": ["input", "weight"],
                                                   "train.lr": [1e-3, 3e-3]}})
    groups, notes = form_groups(load_plan(spec).points, max_batch=3)
    # stacks share everything but noise factor and seed; a kind at factor 0 is none: (none, input 0.1,
    # weight 0.1) x lr = 6 configurations of 2 seeds each. The none points join the noise stacks of
    # their lr where there is room (one each here), rather than making two stacks of their own
    assert sorted(len(g) for g in groups) == [3, 3, 3, 3] and not notes
    for g in groups:
        assert len({p.spec.train.lr for p in g}) == 1
        assert len({p.spec.noise[0].kind for p in g} - {"none"}) == 1
    assert sum(p.spec.noise[0].kind == "none" for g in groups for p in g) == 4
    # with room to spare, all of an lr's none points join its first stack
    groups, _ = form_groups(load_plan(spec).points, max_batch=8)
    assert sorted(sorted(p.spec.noise[0].kind for p in g) for g in groups) == [
        ["input", "input", "none", "none"], ["input", "input", "none", "none"], ["weight", "weight"],
        ["weight", "weight"]]
    # none points alone in a plan still stack with each other
    spec = write_spec(tmp_path, {**SWEEP, "grid": {"noise.factor": [0.0]}}, "none.yaml")
    assert [len(g) for g in form_groups(load_plan(spec).points, max_batch=8)[0]] == [len(load_plan(spec).points)]


MIXED = [("mlp", "activation"), ("mlp", "gradient"), ("mlp", "weight"), ("gpt", "embedding")]


@pytest.mark.parametrize("model,kind", MIXED, ids=[f"{m}-{k}" for m, k in MIXED])
def test_none_members_in_a_stack_of_noise_points_train_as_alone(tmp_path, model, kind, three_threads):
    """A none point first in a stack of noise points: the stack reads its noise entries from a
    member that has them (forward feeds, gradient binding, the stacked forms of weight and
    gradient noise, their draws spread over threads), and the none members add nothing."""
    specs = specs_for(model, "none") + specs_for(model, kind, factors=[FACTORS[kind]])
    outcomes = train_group(specs, tmp_path / "batched", lambda *a: None)
    assert [o.state for o in outcomes] == ["completed"] * len(specs)
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))


@pytest.mark.parametrize("args,message", [
    (["--max-batch", "4"], "error: --max-batch: only with --batched"),
    (["--batched", "--backend", "submitit", "--cluster", "debug"], "error: --batched: with the local backend only"),
])
def test_batched_options_that_do_not_fit(tmp_path, cli, args, message):
    spec = write_spec(tmp_path, SWEEP)
    code, _, err = cli("sweep", spec, "--runs-dir", tmp_path / "runs", *args)
    assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1


LISTS = [("mlp", [{"kind": "input", "factor": 0.2}, {"kind": "activation", "factor": 0.2},
                  {"kind": "gradient", "factor": 0.01}]),
         ("gpt", [{"kind": "token", "factor": 0.1}, {"kind": "embedding", "factor": 5.0},
                  {"kind": "activation", "factor": 0.1}])]


@pytest.mark.parametrize("model,noise", LISTS, ids=[m for m, _ in LISTS])
def test_a_list_of_kinds_is_batched_entry_by_entry(tmp_path, model, noise):
    """Several noise entries at once: each entry's own generator, in each member."""
    base = TEXT if model == "gpt" else TABLE
    specs = [spec_from_dict({**base, "name": f"l{i}-{s}", "seed": s, "model": MODELS[model],
                             "noise": [{**e, "factor": e["factor"] * i} for e in noise]})
             for i in (0, 1, 2) for s in (0, 1)]
    assert [o.state for o in train_group(specs, tmp_path / "batched", lambda *a: None)] == ["completed"] * 6
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))


def test_instruction_data_with_neftune_is_batched(tmp_path):
    """Padded examples: the loss on response tokens only, NEFTune scaled by each example's own length."""
    lines = [json.dumps({"prompt": f"Reverse: {w}\n", "response": w[::-1]})
             for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
                       "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo")]
    (tmp_path / "instructions.jsonl").write_text("\n".join(lines) + "\n")
    specs = [spec_from_dict({"name": f"sft-{i}-{s}", "seed": s, "device": "cpu",
                             "data": {"kind": "sft", "path": str(tmp_path / "instructions.jsonl"), "val_fraction": 0.25},
                             "model": MODELS["gpt"], "noise": {"kind": "embedding", "factor": alpha},
                             "train": {"epochs": 3, "batch_size": 4, "lr": 3e-3}})
             for i, alpha in enumerate((0.0, 5.0, 15.0)) for s in (0, 1)]
    assert [o.state for o in train_group(specs, tmp_path / "batched", lambda *a: None)] == ["completed"] * 6
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))


@pytest.mark.slow
def test_ctrl_c_on_a_real_batched_sweep_saves_every_member_at_one_step(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    spec = write_spec(tmp_path, {**SWEEP, "base": {**SWEEP["base"], "train": {**TABLE["train"], "epochs": 3000}}})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "noisecli", "sweep", str(spec), "--batched", "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "runs" / "sw" / "factor-none_seed-0" / "status.json"  # factor 0 is the none point

    def step() -> int:
        try:
            return json.loads(first.read_text()).get("step", 0)
        except (OSError, ValueError):  # not written yet
            return 0

    deadline = time.time() + 60
    while time.time() < deadline and step() <= 12:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    assert step() > 12, "the stack never reached step 12 (the wait would otherwise run out silently)"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    states = {json.loads(p.read_text())["state"] for p in (tmp_path / "runs" / "sw").glob("*/status.json")}
    steps = {json.loads(p.read_text())["step"] for p in (tmp_path / "runs" / "sw").glob("*/status.json")}
    assert states == {"interrupted"} and len(steps) == 1 and steps.pop() > 12
    for ckpt in (tmp_path / "runs" / "sw").glob("*/checkpoints/last.pt"):
        assert torch.load(ckpt, weights_only=True)["step"] > 12


def test_dry_run_shows_the_stacks(tmp_path, cli):
    spec = write_spec(tmp_path, SWEEP)
    code, out, _ = cli("sweep", spec, "--runs-dir", tmp_path / "runs", "--dry-run", "--batched", "--max-batch", "4")
    # the other factors (2 x 2 seeds) fill a stack of 4; none (factor 0 of the grid, 2 seeds) has no room left there
    assert code == 0 and "--batched: 2 stacks (4, 2 points), 0 points alone" in out.splitlines()
    code, out, _ = cli("sweep", spec, "--runs-dir", tmp_path / "runs", "--dry-run", "--batched", "--max-batch", "8")
    assert code == 0 and "--batched: 1 stack (6 points), 0 points alone" in out.splitlines()  # none joins them
    assert not (tmp_path / "runs").exists()
