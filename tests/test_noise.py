"""Every noise kind against what its paper says, and the properties every kind shares."""

import math
import sys

import numpy as np
import pytest
import torch

from noisecli.data import Dataset
from noisecli.errors import SpecError
from noisecli.models.gpt import GPT
from noisecli.noise import NoiseContext, build_noises
from noisecli.noise.base import schedule_factor
from noisecli.spec import NoiseSpec, load_spec, spec_from_dict
from noisecli.trainer import Trainer
from tests.conftest import ROOT, write_spec
from tests.test_train import assert_resume_is_exact, assert_same_weights, train_run, untimed

TABLE = {"data": {"kind": "digits", "train_size": 96}, "model": {"kind": "mlp", "hidden": [16]},
         "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "eval_every": 4}}
TOKENS = {"data": {"kind": "markov", "n_tokens": 3000, "block_size": 16},
          "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16},
          "train": {"max_steps": 10, "batch_size": 8, "lr": 3e-3, "eval_every": 4, "eval_batches": 2}}
KINDS = {"input": (TABLE, 0.3), "weight": (TABLE, 0.05), "activation": (TABLE, 0.3), "gradient": (TABLE, 0.01),
         "anticorrelated": (TABLE, 0.05), "token": (TOKENS, 0.2), "embedding": (TOKENS, 5.0)}


def kind_spec(tmp_path, kind, factor=None, **noise):
    base, default = KINDS[kind]
    return write_spec(tmp_path, {"name": kind, **base,
                                 "noise": {"kind": kind, "factor": default if factor is None else factor, **noise}})


def tokens_dataset(ids: torch.Tensor, vocab: int, pad_id=None) -> Dataset:
    return Dataset("t", "lm", ids, None, ids, None, vocab, block_size=ids.shape[-1], pad_id=pad_id)


def noise_for(spec: NoiseSpec, model, ds, total=100):
    (noise,) = build_noises([spec], NoiseContext(model, ds, total, torch.device("cpu"), seed=0))
    return noise


# ---------------------------------------------------------------- shared properties


def test_every_noise_kind_in_the_catalog_is_tested_here():
    from noisecli.catalog import NOISE

    assert set(KINDS) == set(NOISE) - {"none"}


def test_a_problem_in_a_list_of_kinds_names_the_entry_by_its_index(tmp_path):
    """Entry 0 too: 'noise.0.targets', not 'noise.targets' (which names no key of a list)."""
    spec = write_spec(tmp_path, {**TABLE, "noise": [{"kind": "weight", "targets": ["nothing*"]},
                                                    {"kind": "activation", "targets": ["nothing*"]}]})
    for index in (0, 1):
        with pytest.raises(SpecError) as e:
            Trainer(load_spec(spec, [f"noise.{1 - index}.targets=null"]), tmp_path / "r", quiet=True).setup()
        assert e.value.problems[0].startswith(f"noise.{index}.targets: ['nothing*'] match no ")


def test_list_noise_says_anti_pgd_without_decay_is_weight_noise(cli):
    code, out, _ = cli("list", "noise")
    line = next(x for x in out.splitlines() if x.strip().startswith("anticorrelated"))
    assert code == 0 and "with train.weight_decay 0 it trains exactly like additive weight noise" in line


@pytest.mark.parametrize("kind", KINDS)
def test_factor_zero_is_bitwise_none(tmp_path, kind):
    noisy = train_run(kind_spec(tmp_path, kind, factor=0.0), tmp_path / "a")
    base = write_spec(tmp_path, {"name": "none", **KINDS[kind][0]}, "none.yaml")
    none = train_run(base, tmp_path / "b")
    assert_same_weights(noisy, none)
    assert untimed(noisy.state.rows) == untimed(none.state.rows)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_result_and_the_noise_acts(tmp_path, kind):
    spec = kind_spec(tmp_path, kind)
    a, b = train_run(spec, tmp_path / "a"), train_run(spec, tmp_path / "b")
    assert_same_weights(a, b)
    assert untimed(a.state.rows) == untimed(b.state.rows)
    none = train_run(spec, tmp_path / "c", ["noise.kind=none"])
    assert untimed(a.state.rows) != untimed(none.state.rows)
    assert a.state.rows[-1]["noise_factor"] == KINDS[kind][1]


@pytest.mark.parametrize("kind", KINDS)
def test_resume_stays_exact(tmp_path, kind):
    assert_resume_is_exact(kind_spec(tmp_path, kind), tmp_path, stop_after=6)


def test_schedules_warmup_and_decay():
    s = NoiseSpec(kind="input", factor=1.0, schedule="linear")
    assert [schedule_factor(s, t, 10) for t in (0, 5, 10)] == [1.0, 0.5, 0.0]
    s.schedule = "cosine"
    assert schedule_factor(s, 5, 10) == pytest.approx(0.5) and schedule_factor(s, 10, 10) == pytest.approx(0)
    s.schedule, s.warmup_steps = "constant", 3
    assert [schedule_factor(s, t, 10) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_noise_factor_column_follows_the_schedule(tmp_path):
    trainer = train_run(kind_spec(tmp_path, "input", schedule="linear"), tmp_path / "r")
    steps = [r["step"] for r in trainer.state.rows]
    assert [r["noise_factor"] for r in trainer.state.rows] == pytest.approx([0.3 * (1 - (s - 1) / 12) for s in steps])


def test_a_list_of_kinds_logs_each_kinds_factor(tmp_path):
    spec = write_spec(tmp_path, {**TABLE, "name": "two", "noise": [
        {"kind": "input", "factor": 0.3, "schedule": "linear"}, {"kind": "weight", "factor": 0.02}]})
    trainer = train_run(spec, tmp_path / "r")
    steps = [r["step"] for r in trainer.state.rows]
    assert [r["noise_factor_input"] for r in trainer.state.rows] == pytest.approx([0.3 * (1 - (s - 1) / 12) for s in steps])
    assert [r["noise_factor_weight"] for r in trainer.state.rows] == [0.02] * len(steps)
    assert [r["noise_factor"] for r in trainer.state.rows] == [r["noise_factor_input"] for r in trainer.state.rows]
    header = (tmp_path / "r" / "two" / "metrics.csv").read_text().splitlines()[0]
    assert "noise_factor,noise_factor_input,noise_factor_weight,grad_norm" in header


# ---------------------------------------------------------------- input: Bishop 1995


def test_input_noise_on_a_linear_model_converges_to_ridge_regression(tmp_path):
    """Gaussian input noise of std s under MSE is ridge with penalty s^2 |w|^2, the bias unpenalized."""
    rng = np.random.default_rng(0)
    n, d, s = 200, 4, 0.6
    x = rng.normal(size=(n, d)) * [1.0, 0.5, 2.0, 1.0] + 0.3
    y = x @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.7 + 0.3 * rng.normal(size=n)
    np.savez(tmp_path / "lin.npz", x=x, y=y, x_val=x[:10], y_val=y[:10])
    spec = write_spec(tmp_path, {"name": "bishop", "data": {"kind": "npz", "path": "lin.npz", "standardize": False},
                                 "model": {"kind": "linear"}, "noise": {"kind": "input", "factor": s},
                                 "train": {"epochs": 4000, "batch_size": n, "lr": 0.05, "lr_schedule": "cosine",
                                           "weight_decay": 0.0, "grad_clip": 0, "eval_every": 4000}})
    trainer = train_run(spec, tmp_path / "runs")
    w = trainer.raw_model[1].weight.detach().double().numpy().ravel()
    xc, yc = x - x.mean(0), y - y.mean()
    ridge = np.linalg.solve(xc.T @ xc / n + s**2 * np.eye(d), xc.T @ yc / n)
    ols = np.linalg.solve(xc.T @ xc / n, xc.T @ yc / n)
    assert np.abs(w - ridge).max() < 0.02  # the noisy optimum
    assert np.abs(ridge - ols).max() > 0.3  # ... which is far from least squares
    b = trainer.raw_model[1].bias.item()
    assert b == pytest.approx(y.mean() - x.mean(0) @ ridge, abs=0.03)


def test_uniform_input_noise_has_the_same_std():
    ds = tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2)
    for dist in ("gaussian", "uniform"):
        noise = noise_for(NoiseSpec(kind="input", factor=0.5, distribution=dist), torch.nn.Linear(1, 1), ds)
        x = torch.zeros(200_000)
        eps = noise.transform_input(x, 0.5)
        assert eps.std().item() == pytest.approx(0.5, rel=0.01)
        assert (eps.abs().max().item() <= 0.5 * math.sqrt(3) + 1e-6) == (dist == "uniform")
        assert torch.equal(x, torch.zeros(200_000))  # the batch itself is not modified


# ---------------------------------------------------------------- token


def test_token_replacement_rate_matches_p_within_a_binomial_bound():
    vocab, n, p = 10, 200_000, 0.15
    ids = torch.randint(vocab, (n // 100, 100), generator=torch.Generator().manual_seed(0))
    noise = noise_for(NoiseSpec(kind="token", factor=p), torch.nn.Linear(1, 1), tokens_dataset(ids, vocab))
    out = noise.transform_input(ids, p)
    changed = (out != ids).float().mean().item()
    expected = p * (1 - 1 / vocab)  # a uniform draw equals the original with probability 1/vocab
    assert abs(changed - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_token_unigram_draws_follow_training_frequencies_and_padding_is_untouched():
    freqs = torch.tensor([0.0, 0.5, 0.3, 0.15, 0.05])  # id 0 is padding
    train = torch.multinomial(freqs, 100_000, replacement=True, generator=torch.Generator().manual_seed(1))
    ds = tokens_dataset(train.view(1000, 100), 5, pad_id=0)
    noise = noise_for(NoiseSpec(kind="token", factor=1.0, replace_with="unigram"), torch.nn.Linear(1, 1), ds)
    x = torch.full((400, 100), 1)
    x[:, 80:] = 0  # padded tail
    out = noise.transform_input(x, 1.0)
    assert torch.equal(out[:, 80:], x[:, 80:])
    drawn = out[:, :80].flatten()
    assert (drawn != 0).all()
    empirical = torch.bincount(drawn, minlength=5).float() / drawn.numel()
    target = torch.bincount(train, minlength=5).float() / train.numel()
    assert torch.allclose(empirical, target, atol=4 * math.sqrt(0.25 / drawn.numel()))


def test_token_noise_never_reaches_the_targets_the_loss_receives(tmp_path, monkeypatch):
    """Checked where it matters: the y handed to the loss, not the batcher's own y."""
    import noisecli.engine.step as trainer_module  # where the step calls the loss

    trainer = Trainer(load_spec(kind_spec(tmp_path, "token", factor=1.0)), tmp_path / "r", quiet=True).setup()
    seen = {}
    real_next, real_loss = trainer.batches.next, trainer_module.loss_fn

    def spy():
        x, y = real_next()
        seen["x"], seen["y"] = x.clone(), y.clone()
        return x, y

    def loss_spy(out, y, task, reduction="mean", **kw):
        seen["loss_y"] = y.clone()
        return real_loss(out, y, task, reduction, **kw)

    trainer.batches.next = spy
    monkeypatch.setattr(trainer_module, "loss_fn", loss_spy)
    model_inputs = []
    trainer.raw_model.register_forward_pre_hook(lambda m, args: model_inputs.append(args[0].clone()))
    trainer.train_step()
    assert not torch.equal(model_inputs[0], seen["x"])  # the model saw corrupted context ...
    assert (model_inputs[0] != seen["x"]).float().mean() > 0.5  # (p = 1: most tokens replaced)
    assert torch.equal(seen["loss_y"], seen["y"])  # ... and the loss the true next characters
    assert torch.equal(seen["x"][:, 1:], seen["y"][:, :-1])


def test_token_probability_above_one_is_refused():
    with pytest.raises(SpecError) as e:
        spec_from_dict({**TOKENS, "noise": {"kind": "token", "factor": 1.5}})
    assert e.value.problems == ["noise.factor: token noise replaces each token with probability factor; "
                                "must be in [0, 1], got 1.5"]


# ---------------------------------------------------------------- embedding (NEFTune)


def test_neftune_scale_uses_each_examples_own_length_and_spares_padding():
    vocab, d, alpha = 12, 32, 5.0
    model = GPT(vocab, 16, 1, 2, d, 0.0, False)
    ids = torch.randint(1, vocab, (3, 16), generator=torch.Generator().manual_seed(0))
    lengths = [16, 9, 3]
    for i, n in enumerate(lengths):
        ids[i, n:] = 0  # pad id 0
    noise = noise_for(NoiseSpec(kind="embedding", factor=alpha, distribution="uniform"), model,
                      tokens_dataset(ids, vocab, pad_id=0))
    emb = model.get_input_embeddings()
    clean = emb(ids).detach()
    noise.attach(model)
    noise.before_forward(alpha)
    model.train()
    noisy = emb(ids).detach()
    diff = noisy - clean
    for i, n in enumerate(lengths):
        bound = alpha / math.sqrt(n * d)
        assert diff[i, :n].abs().max() <= bound + 1e-6
        assert diff[i, :n].abs().max() > 0.9 * bound  # scaled by L_i, not by the padded 16
        assert torch.equal(diff[i, n:], torch.zeros_like(diff[i, n:]))
    # U(-1, 1), centred: on the full-length example diff / bound has mean 0, sd 1/sqrt(3), both signs
    u = (diff[0] / (alpha / math.sqrt(16 * d))).flatten()  # 512 draws
    assert abs(u.mean().item()) < 4 / math.sqrt(3 * u.numel())
    assert u.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.1)
    assert 0.4 < (u < 0).float().mean().item() < 0.6
    model.eval()
    assert torch.equal(emb(ids), clean)  # evaluation is clean
    noise.detach()
    model.train()
    assert torch.equal(emb(ids), clean) and not emb._forward_hooks


def test_embedding_noise_on_data_without_tokens_is_refused_by_the_spec():
    with pytest.raises(SpecError) as e:
        spec_from_dict({"data": {"kind": "digits"}, "noise": {"kind": "embedding"}})
    assert e.value.problems == ["noise.kind: 'embedding' does not apply to data kind 'digits' (image/vector)"]


def test_embedding_noise_on_a_model_without_input_embeddings_is_one_clear_error():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))  # no get_input_embeddings()
    with pytest.raises(SpecError) as e:
        noise_for(NoiseSpec(kind="embedding", factor=5.0), model, tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2))
    assert e.value.problems == ["noise.kind: 'embedding' needs a model with input embeddings: Sequential "
                                "has no get_input_embeddings()"]


# ---------------------------------------------------------------- weight


def test_weight_noise_gradient_is_taken_at_the_perturbed_point_and_clean_weights_return():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    ds = tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2)
    noise = noise_for(NoiseSpec(kind="weight", factor=0.1), model, ds)
    x, y = torch.randn(16, 5), torch.randn(16, 2)
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    noise.before_forward(0.1)
    perturbed = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(perturbed["0.weight"], clean["0.weight"])
    assert torch.equal(perturbed["0.bias"], clean["0.bias"])  # biases are not targets by default
    torch.nn.functional.mse_loss(model(x), y).backward()
    noise.after_backward(0.1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, clean[k]), k  # exactly the clean weights, no rounding left
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    twin.load_state_dict(perturbed)
    torch.nn.functional.mse_loss(twin(x), y).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7)


def test_weight_step_moves_clean_weights_by_the_optimizer_only(tmp_path):
    a = Trainer(load_spec(kind_spec(tmp_path, "weight")), tmp_path / "a", quiet=True).setup()
    before = [p.detach().clone() for p in a.params]
    a.train_step()
    # replay: same batch, gradient at the recorded perturbed point, one AdamW step from the clean weights
    b = Trainer(load_spec(kind_spec(tmp_path, "weight")), tmp_path / "b", quiet=True).setup()
    x, y = b.batches.next()
    b.noises[0].before_forward(0.05)
    loss = torch.nn.functional.cross_entropy(b.model(x), y)
    loss.backward()
    for p, clean in zip(b.params, before):
        p.data.copy_(clean)
    torch.nn.utils.clip_grad_norm_(b.params, 1.0)
    b.optimizer.step()
    for p, q in zip(a.params, b.params):
        assert torch.allclose(p, q, atol=1e-7)
    assert any(not torch.equal(p, c) for p, c in zip(a.params, before))


def test_multiplicative_weight_noise_scales_with_the_weight():
    model = torch.nn.Linear(200, 200, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.weight[:100] = 0.0
    noise = noise_for(NoiseSpec(kind="weight", factor=0.1, mode="multiplicative"), model,
                      tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2))
    noise.before_forward(0.1)
    w = model.weight.detach()
    assert torch.equal(w[:100], torch.zeros(100, 200))
    assert (w[100:] / 2 - 1).std().item() == pytest.approx(0.1, rel=0.05)


def test_weight_targets_are_globs_and_a_miss_is_a_spec_error(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    ds = tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2)
    noise = noise_for(NoiseSpec(kind="weight", factor=0.1, targets=["1.*"]), model, ds)
    assert [p.shape for p in noise.params] == [torch.Size([1, 3]), torch.Size([1])]
    with pytest.raises(SpecError, match=r"noise.targets: \['blocks.\*'\] match no parameter"):
        noise_for(NoiseSpec(kind="weight", factor=0.1, targets=["blocks.*"]), model, ds)


# ---------------------------------------------------------------- anticorrelated (Anti-PGD)


def test_anti_pgd_clean_iterate_follows_perturb_and_restore_with_fresh_draws(tmp_path):
    """Orvieto et al. 2022: z_n = w_n - xi_n obeys z_{n+1} = z_n - update(grad L(z_n + xi_n))."""
    over = ["train.weight_decay=0", "noise.factor=0.05"]
    anti = train_run(kind_spec(tmp_path, "anticorrelated"), tmp_path / "anti", over)
    weight = train_run(kind_spec(tmp_path, "anticorrelated"), tmp_path / "weight", over + ["noise.kind=weight"])
    for p, q in zip(anti.raw_model.parameters(), weight.raw_model.parameters()):
        assert torch.allclose(p, q, atol=2e-5)
    none = train_run(kind_spec(tmp_path, "anticorrelated"), tmp_path / "none", over + ["noise.kind=none"])
    assert max((p - q).abs().max() for p, q in zip(anti.raw_model.parameters(), none.raw_model.parameters())) > 1e-3


def test_anti_pgd_perturbation_is_the_difference_of_successive_draws(tmp_path):
    trainer = Trainer(load_spec(kind_spec(tmp_path, "anticorrelated")), tmp_path / "r", quiet=True).setup()
    noise = trainer.noises[0]
    xis = []
    for _ in range(30):
        trainer.train_step()
        xis.append(torch.cat([t.flatten() for t in noise.xi]))
        w = [p.detach().clone() for p in noise.params]
        noise.before_eval()  # evaluation sees the clean point z, and w was made as z + xi ...
        for p, w_p, xi in zip(noise.params, w, noise.xi):
            assert torch.equal(p + xi, w_p)
            assert torch.allclose(p, w_p - xi, atol=1e-6)
        noise.after_eval()  # ... and the iterate w comes back exactly
        assert all(torch.equal(p, w_p) for p, w_p in zip(noise.params, w))
    xi = torch.stack(xis)
    assert xi.std().item() == pytest.approx(0.05, rel=0.02)  # xi_n ~ N(0, factor^2)
    steps = xi[1:] - xi[:-1]  # the perturbation each step adds
    corr = torch.nn.functional.cosine_similarity(steps[1:], steps[:-1], dim=1)
    assert corr.mean().item() == pytest.approx(-0.5, abs=0.02)  # anticorrelated, as the name says


# ---------------------------------------------------------------- gradient


def test_gradient_noise_variance_follows_eta_over_one_plus_t_to_the_gamma():
    model = torch.nn.Linear(300, 300)
    noise = noise_for(NoiseSpec(kind="gradient", factor=0.3), model, tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2))
    for t in (0, 9, 99, 999):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        f = noise.factor(t)
        noise.on_gradients(f)
        added = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert added.var().item() == pytest.approx(0.3 / (1 + t) ** 0.55, rel=0.02)


def test_gradient_noise_is_added_after_clipping(tmp_path):
    """Neelakantan et al. add the noise to the clipped gradient: clipping must not shrink it."""
    clip = 1e-4
    trainer = Trainer(load_spec(kind_spec(tmp_path, "gradient", factor=1.0), [f"train.grad_clip={clip}"]),
                      tmp_path / "r", quiet=True).setup()
    at_step = []
    real_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: at_step.append(
        torch.cat([p.grad.flatten() for p in trainer.params]).clone()) or real_step(*a, **k)
    trainer.train_step()
    grads = at_step[0]
    # the clean gradient is clipped to norm 1e-4; the noise (sd 1 per element) is not
    assert grads.norm().item() > 100 * clip
    assert grads.std().item() == pytest.approx(1.0, rel=0.05)
    assert trainer.state.interval.sums["grad_norm"].item() > clip  # the logged norm is the clean gradient's, before clipping


# ---------------------------------------------------------------- activation


def test_activation_hooks_live_only_during_training(tmp_path):
    trainer = Trainer(load_spec(kind_spec(tmp_path, "activation")), tmp_path / "r", quiet=True).setup()
    trainer.open_run()
    relu = trainer.raw_model[2]
    assert isinstance(relu, torch.nn.ReLU) and trainer.noises[0].names == ["2"]
    seen = []
    real = trainer.train_step

    def step():
        seen.append(len(relu._forward_hooks))
        return real()

    trainer.train_step = step
    trainer.train()
    trainer.close()
    assert seen and set(seen) == {1} and len(relu._forward_hooks) == 0


def test_activation_noise_is_off_in_eval_and_on_in_training():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    noise = noise_for(NoiseSpec(kind="activation", factor=0.5), model,
                      tokens_dataset(torch.zeros(1, 4, dtype=torch.long), 2))
    x = torch.randn(5, 4)
    clean = model(x).detach()
    noise.attach(model)
    noise.before_forward(0.5)
    model.eval()
    assert torch.equal(model(x), clean)
    model.train()
    assert not torch.equal(model(x), clean)
    noise.detach()
    assert torch.equal(model(x), clean)


def test_activation_defaults_to_transformer_blocks_for_gpt():
    model = GPT(10, 8, 3, 2, 16, 0.0, False)
    noise = noise_for(NoiseSpec(kind="activation", factor=0.1), model,
                      tokens_dataset(torch.zeros(1, 8, dtype=torch.long), 10))
    assert noise.names == ["h.0", "h.1", "h.2"]


# ---------------------------------------------------------------- several kinds at once


def test_a_list_of_kinds_applies_each(tmp_path):
    spec = write_spec(tmp_path, {"name": "combo", **TABLE, "noise": [{"kind": "input", "factor": 0.3},
                                                                     {"kind": "weight", "factor": 0.05}]})
    combo = train_run(spec, tmp_path / "c")
    only_input = train_run(spec, tmp_path / "i", ["noise.1.factor=0"])
    assert untimed(combo.state.rows) != untimed(only_input.state.rows)
    assert combo.spec.noise_label == "input+weight 0.3/0.05"


def test_embedding_defaults_to_neftunes_uniform_and_input_to_gaussian():
    emb = spec_from_dict({**TOKENS, "noise": {"kind": "embedding", "factor": 5}})
    assert emb.noise[0].distribution == "uniform"
    assert spec_from_dict({**TABLE, "noise": {"kind": "input"}}).noise[0].distribution == "gaussian"


@pytest.mark.parametrize("kind", ["none", *KINDS])
def test_the_training_step_never_reads_a_value_back_to_the_host(tmp_path, monkeypatch, kind):
    base, factor = KINDS.get(kind, (TABLE, 0.0))
    spec = write_spec(tmp_path, {"name": kind, **base, "noise": {"kind": kind, "factor": factor}})
    assert_steps_never_read_back(Trainer(load_spec(spec), tmp_path / "r", quiet=True).setup(), monkeypatch)


def assert_steps_never_read_back(trainer: Trainer, monkeypatch) -> None:
    """On a GPU any of these would stall the step until the device catches up; on the CPU
    the same code path is checked by making each of them fail inside train_step when
    noisecli's own code calls it."""
    for noise in trainer.noises:
        noise.attach(trainer.raw_model)

    package = str(ROOT / "noisecli")

    def guard(name):
        real = getattr(torch.Tensor, name)

        def read_back(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename  # torch's own CPU-side counters are fine
            assert not caller.startswith(package), f"Tensor.{name} called from {caller} inside the step"
            return real(self, *args, **kwargs)

        return read_back

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, guard(name))
        for _ in range(3):
            trainer.train_step()
    assert trainer.step == 3 and math.isfinite(trainer.state.interval.sums["loss"].item())
