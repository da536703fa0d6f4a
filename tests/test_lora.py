"""`model.lora` (peft LoRA and DoRA), `model.dtype`, and `noisecli export`, with real peft and real
transformers models built from configs here (a one- or two-block Llama or GPT-2, a tiny BPE
tokenizer): nothing is downloaded."""

import json
import sys

import peft  # in the test extra: these tests use the real package, never a stand-in
import pytest
import torch
import transformers
import yaml

from noisecli.data import load_dataset
from noisecli.engine import evaluation
from noisecli.models import build_model
from noisecli.models.hf import HFCausalLM
from noisecli.noise import NoiseContext, build_noises
from noisecli.noise.activation import default_activation_targets
from noisecli.spec import spec_from_dict
from noisecli.trainer import Trainer
from tests.conftest import run_process, write_spec
from tests.test_train import assert_resume_is_exact, train_run

LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
DATA = {"kind": "markov", "block_size": 16, "n_tokens": 2000}
TRAIN = {"max_steps": 6, "batch_size": 8, "lr": 1e-2, "eval_every": 3, "eval_batches": 2}
LORA_RUN = {"data": DATA, "model": {"kind": "hf", "config": LLAMA, "lora": {"r": 4}}, "train": TRAIN}
BASE_PREFIX = "model.base_model.model."  # noisecli's wrapper, then peft's, then the transformers names


def built(raw):
    spec = spec_from_dict(raw)
    torch.manual_seed(0)
    data = load_dataset(spec.data)
    return spec, data, build_model(spec.model, data)


def trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_only_the_adapters_train_and_the_model_still_reads_ids_and_gives_logits(tmp_path):
    trainer = Trainer(spec_from_dict({**LORA_RUN, "name": "a"}), tmp_path / "runs", quiet=True).setup()
    model = trainer.raw_model
    assert isinstance(model, HFCausalLM) and isinstance(model.model, peft.PeftModel)
    names = trainable(model)
    # peft's default for llama: q_proj and v_proj of each block, A and B
    assert len(names) == 2 * 2 * 2 and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert all(n.split(".")[-4] in ("q_proj", "v_proj") for n in names)
    assert [id(p) for p in trainer.params] == [id(p) for n, p in model.named_parameters() if n in names]
    assert model(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 16)  # (B, T, vocab)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.open_run()
    trainer.train()
    trainer.close()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())  # the base never moves
    assert sum(not torch.equal(after[n], p) for n, p in adapters.items()) == len(adapters)


def test_noise_under_lora_acts_on_the_adapters_the_base_embedding_and_the_blocks(tmp_path):
    noise = [{"kind": "weight", "factor": 0.01}, {"kind": "embedding", "factor": 5.0},
             {"kind": "activation", "factor": 0.1}, {"kind": "gradient", "factor": 0.01}]
    raw = {**LORA_RUN, "model": {**LORA_RUN["model"], "lora": {"r": 4, "dora": True}}, "noise": noise}
    spec, data, model = built(raw)
    weight, emb, act, grad = build_noises(spec.noise, NoiseContext(model, data, 10, torch.device("cpu"), 0))
    named = {id(p): n for n, p in model.named_parameters()}
    # the trained weight matrices: A and B, not DoRA's magnitude (a vector, as norm gains), not the base
    chosen = sorted(named[id(p)] for p in weight.params)
    assert chosen == sorted(n for n in trainable(model) if ".lora_A." in n or ".lora_B." in n) and len(chosen) == 8
    assert any("lora_magnitude_vector" in n for n in trainable(model))
    assert emb.names == [BASE_PREFIX + "model.embed_tokens"] and emb.module is model.model.get_input_embeddings()
    assert act.names == default_activation_targets(model) == [BASE_PREFIX + "model.layers.0",
                                                               BASE_PREFIX + "model.layers.1"]
    assert {id(p) for p in grad.params} == {id(p) for p in model.parameters() if p.requires_grad}
    # a glob in peft's names reaches the frozen base when asked for
    spec, data, model = built({**raw, "noise": {"kind": "weight", "factor": 0.01,
                                                "targets": ["*.q_proj.base_layer.weight"]}})
    (base,) = build_noises(spec.noise, NoiseContext(model, data, 10, torch.device("cpu"), 0))
    assert len(base.params) == 2 and not any(p.requires_grad for p in base.params)
    ids = data.x_train[:32].view(2, 16)
    model.train()
    clean = model(ids)
    base.before_forward(0.5)
    noisy = model(ids)
    base.after_backward(0.5)
    assert not torch.allclose(noisy, clean) and torch.equal(model(ids), clean)  # perturbed, then restored exactly


def test_resume_of_a_lora_run_is_exact(tmp_path):
    raw = {**LORA_RUN, "name": "r", "model": {**LORA_RUN["model"], "lora": {"r": 4, "dropout": 0.1}},
           "noise": [{"kind": "weight", "factor": 0.01}, {"kind": "embedding", "factor": 5.0}]}
    assert_resume_is_exact(write_spec(tmp_path, raw), tmp_path, stop_after=4)


def test_a_lora_checkpoint_holds_the_adapters_alone_and_is_much_smaller(tmp_path):
    wide = {**LLAMA, "hidden_size": 64, "intermediate_size": 128}
    plain = {"data": DATA, "model": {"kind": "hf", "config": wide}, "train": {**TRAIN, "max_steps": 3}}
    full = train_run(write_spec(tmp_path, {**plain, "name": "full"}), tmp_path / "runs")
    lora = train_run(write_spec(tmp_path, {**plain, "name": "lora", "model": {**plain["model"], "lora": {"r": 2}}}),
                     tmp_path / "runs")
    sizes = {name: (tmp_path / "runs" / name / "checkpoints" / "last.pt").stat().st_size for name in ("full", "lora")}
    assert sizes["lora"] * 10 < sizes["full"], sizes
    saved = torch.load(tmp_path / "runs" / "lora" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["model_part"] == "trainable" and sorted(saved["model"]) == sorted(trainable(lora.raw_model))
    assert torch.load(tmp_path / "runs" / "full" / "checkpoints" / "last.pt", weights_only=True)["model_part"] == "all"
    assert full.raw_model.model.config.hidden_size == 64


def test_bf16_weights_train_and_under_lora_the_adapters_and_their_adam_state_stay_fp32(tmp_path):
    gpt2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}
    raw = {"data": DATA, "model": {"kind": "hf", "config": gpt2, "dtype": "bf16"}, "train": {**TRAIN, "max_steps": 3},
           "noise": {"kind": "weight", "factor": 0.01}}
    trainer = train_run(write_spec(tmp_path, {**raw, "name": "bf16"}), tmp_path / "runs")
    params = dict(trainer.raw_model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.bfloat16}
    assert {s["exp_avg"].dtype for s in trainer.optimizer.state.values()} == {torch.bfloat16}  # torch's AdamW: the param's
    first = {n: p.clone() for n, p in built(raw)[2].named_parameters()}
    assert all(not torch.equal(first[n], p) for n, p in params.items() if n.endswith("c_attn.weight"))  # it moved
    assert all(torch.isfinite(torch.tensor(r["val_loss"])) for r in trainer.state.rows)
    lora = train_run(write_spec(tmp_path, {**raw, "name": "bf16-lora",
                                           "model": {**raw["model"], "lora": {"r": 2}}}), tmp_path / "runs")
    dtypes = {p.requires_grad: p.dtype for p in lora.raw_model.parameters()}
    assert dtypes == {False: torch.bfloat16, True: torch.float32}  # the base in bf16, the adapters fp32
    assert {s["exp_avg"].dtype for s in lora.optimizer.state.values()} == {torch.float32}


@pytest.mark.parametrize("lora,message", [
    ({"rnk": 4}, "error: model.lora.rnk: unknown key; did you mean 'r'? (keys: r, alpha, dropout, targets, dora)"),
    ({"lora_alpha": 8}, "error: model.lora.lora_alpha: unknown key; did you mean 'alpha'?"),
    ({"r": 0}, "error: model.lora.r: the adapters' rank, a whole number >= 1; got 0"),
    ({"dropout": 1.0}, "error: model.lora.dropout: dropout on the adapters' input, a number in [0, 1); got 1.0"),
    ({"dora": "yes"}, "error: model.lora.dora: true or false (DoRA: weight-decomposed adapters); got 'yes'"),
    ({"targets": ["q_prj"]}, "error: model.lora.targets: 'q_prj' names no module of this llama; did you mean 'q_proj'?"),
    (None, "error: model.dtype: fp16 weights train only under model.lora (the adapters stay fp32)"),
])
def test_lora_and_dtype_mistakes_are_one_line_exit_2_and_nothing_written(cli, tmp_path, lora, message):
    model = {"kind": "hf", "config": LLAMA, **({"lora": lora} if lora else {"dtype": "fp16"})}
    spec = write_spec(tmp_path, {"data": DATA, "model": model, "train": TRAIN})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_gpt2_lora_run_trains_in_a_real_process_with_quiet_output_clean_and_its_lora_resolved(tmp_path):
    """(peft warns that it sets fan_in_fan_out for GPT-2's Conv1D itself: not the user's concern.)"""
    gpt2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}
    spec = write_spec(tmp_path, {"name": "g", "data": DATA, "model": {"kind": "hf", "config": gpt2, "lora": {"r": 2}},
                                 "train": {**TRAIN, "max_steps": 2, "eval_every": 2}})
    done = run_process("train", spec, "--runs-dir", "runs", "-q", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    saved = yaml.safe_load((tmp_path / "runs" / "g" / "spec.yaml").read_text())
    assert saved["model"]["lora"] == {"r": 2, "alpha": 16, "dropout": 0.0, "targets": None, "dora": False}


def test_without_peft_the_message_says_which_extra_to_install(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` sees when it is absent
    code, _, err = cli("train", write_spec(tmp_path, {**LORA_RUN, "name": "p"}), "--runs-dir", tmp_path / "runs")
    assert code == 2 and err == "error: model.lora: needs the peft package; install it with pip install " \
                                "'noisecli[lora]'\n"


# ---------------------------------------------------------------- noisecli export


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """A 300-token BPE tokenizer trained here on pydoc text, as save_pretrained writes it."""
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tokenizer")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["".join(topics[k] for k in sorted(topics))[:20_000]],
                            trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(folder)
    return folder


def val_loss_of(folder, run_raw, tmp_path) -> float:
    """The val loss of the model saved in `folder`, measured by the engine on the run's val split."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    plain = {**run_raw, "model": {k: v for k, v in run_raw["model"].items() if k != "lora"}}
    run = Trainer(spec_from_dict(plain), tmp_path / "scratch", quiet=True).setup()
    run.eval_model = HFCausalLM(model).eval()
    sums = evaluation.to_host(run.world, evaluation.measure(run, "val"))
    return sums["loss"] / sums["count"]


def logged_and_eval(cli, run_dir):
    code, out, err = cli("eval", run_dir, "--format", "json")
    assert code == 0, err
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["val_loss"], json.loads(out)["val_loss"]


def test_export_of_a_run_with_a_tokenizer_loads_and_evaluates_to_the_logged_val_loss(cli, tmp_path, tokenizer_folder):
    gpt2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "vocab_size": 300}
    raw = {"name": "plain", "data": {"kind": "pydoc", "block_size": 16, "tokenizer": str(tokenizer_folder),
                                     "train_size": 200},
           "model": {"kind": "hf", "config": gpt2}, "train": {**TRAIN, "max_steps": 3}}
    train_run(write_spec(tmp_path, raw), tmp_path / "runs")
    code, out, err = cli("export", tmp_path / "runs" / "plain", tmp_path / "out")
    assert code == 0 and err == "" and out.startswith(f"exported run 'plain' (last.pt, step 3) to {tmp_path / 'out'}")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "out").iterdir()}
    logged, evaluated = logged_and_eval(cli, tmp_path / "runs" / "plain")
    assert abs(val_loss_of(tmp_path / "out", raw, tmp_path) - logged) < 1e-5 and abs(evaluated - logged) < 1e-5
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out", local_files_only=True)
    assert len(tok) == 300


def test_export_of_a_lora_run_merged_and_as_adapters_evaluates_to_the_logged_val_loss(cli, tmp_path):
    raw = {**LORA_RUN, "name": "lora"}
    train_run(write_spec(tmp_path, raw), tmp_path / "runs")
    run_dir = tmp_path / "runs" / "lora"
    logged, evaluated = logged_and_eval(cli, run_dir)
    assert abs(evaluated - logged) < 1e-5
    assert cli("export", run_dir, tmp_path / "merged", "--merge")[0] == 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert not any("lora" in n for n, _ in merged.named_parameters())  # a plain model
    assert abs(val_loss_of(tmp_path / "merged", raw, tmp_path) - logged) < 1e-5
    code, out, err = cli("export", "lora", tmp_path / "adapters", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    adapter = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((tmp_path / "adapters" / "base").resolve())
    assert abs(val_loss_of(tmp_path / "adapters", raw, tmp_path) - logged) < 1e-5  # base and adapter loaded
    base_alone = val_loss_of(tmp_path / "adapters" / "base", raw, tmp_path)
    assert abs(base_alone - logged) > 1e-3  # so the adapters made the difference


def test_export_mistakes_are_one_line_exit_2_and_leave_nothing(cli, tmp_path):
    mlp = {"name": "mlp", "data": {"kind": "digits", "train_size": 64}, "model": {"kind": "linear"},
           "train": {"max_steps": 2, "batch_size": 32}}
    train_run(write_spec(tmp_path, mlp), tmp_path / "runs")
    hf = {**LORA_RUN, "name": "hf", "train": {**TRAIN, "max_steps": 3}}
    train_run(write_spec(tmp_path, hf), tmp_path / "runs")
    runs, out = tmp_path / "runs", tmp_path / "exports" / "out"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        ((runs / "nope", out), f"error: export: {runs / 'nope'}: no such run folder"),
        ((runs / "mlp", out), "error: export: run 'mlp' trained model kind 'linear'; only model.kind 'hf' runs export"),
        ((runs / "hf", tmp_path / "full"), f"error: export: {tmp_path / 'full'} exists and is not empty"),
        ((runs / "hf", out, "--checkpoint", "best"), f"error: --checkpoint: {runs / 'hf'} has no best.pt"),
    ]
    for args, message in cases:
        code, _, err = cli("export", *args)
        assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    last = runs / "hf" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    code, _, err = cli("export", runs / "hf", out)
    assert code == 2 and err.startswith("error: --checkpoint: ") and "last.pt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "exports").exists()  # nothing of OUT_DIR, not even its parent, before the checks pass


def test_a_failure_while_writing_leaves_no_folder_behind(cli, tmp_path, monkeypatch):
    train_run(write_spec(tmp_path, {**LORA_RUN, "name": "w", "train": {**TRAIN, "max_steps": 3}}), tmp_path / "runs")
    (tmp_path / "out").mkdir()  # an empty folder may be the target

    def full_disk(*args):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "tokenizer.json"))

    monkeypatch.setattr("noisecli.export._write_tokenizer", full_disk)
    code, _, err = cli("export", tmp_path / "runs" / "w", tmp_path / "out", "--merge")
    assert code == 1 and "No space left on device" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("runs", "spec.yaml")] == ["out"]
    assert not any((tmp_path / "out").iterdir())  # the half-written model went with its temporary folder


# noisecli's own gpt under peft's custom-model path
GPT = {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16}
GPT_RUN = {"data": DATA, "model": {**GPT, "lora": {"r": 2}}, "train": TRAIN}


def test_a_gpt_under_lora_trains_its_c_attn_adapters_and_keeps_gpt_face(tmp_path):
    spec, data, model = built(GPT_RUN)
    names = trainable(model)
    # GPT-2's default in peft: each block's fused q, k, v projection, A and B
    assert sorted(names) == sorted(f"model.base_model.model.h.{i}.attn.c_attn.lora_{ab}.default.weight"
                                   for i in (0, 1) for ab in "AB")
    assert model.block_size == 16 and model(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 16)
    assert model.get_input_embeddings() is model.model.base_model.model.wte  # where NEFTune hooks
    (emb,) = build_noises(spec_from_dict({**GPT_RUN, "noise": {"kind": "embedding", "factor": 5.0}}).noise,
                          NoiseContext(model, data, 10, torch.device("cpu"), 0))
    assert emb.module is model.model.base_model.model.wte
    spec, _, every = built({**GPT_RUN, "model": {**GPT, "lora": {"r": 2, "targets": "all-linear"}}})
    layers = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable(every)}
    assert layers == {"c_attn", "c_proj", "c_fc"}  # not lm_head: it is the tied input embedding


def test_a_gpt_pretrained_then_lora_tuned_keeps_the_source_as_its_frozen_base_and_resumes_exactly(tmp_path):
    source = train_run(write_spec(tmp_path, {"name": "src", "data": DATA, "model": GPT, "train": TRAIN}, "src.yaml"),
                       tmp_path / "runs")
    tuned_raw = {"name": "ft", "data": DATA, "model": {**GPT, "init": "runs/src", "lora": {"r": 2}},
                 "train": {**TRAIN, "max_steps": 4, "eval_every": 2},
                 "noise": {"kind": "embedding", "factor": 5.0}}
    tuned = train_run(write_spec(tmp_path, tuned_raw, "ft.yaml"), tmp_path / "runs")
    pretrained = dict(source.raw_model.named_parameters())
    for name, p in tuned.raw_model.named_parameters():
        if not p.requires_grad:  # the frozen base: the source's weights, untouched by tuning
            plain = name.removeprefix(BASE_PREFIX).replace(".base_layer", "")
            assert torch.equal(p, pretrained[plain]), name
    saved = torch.load(tmp_path / "runs" / "ft" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["model_part"] == "trainable" and sorted(saved["model"]) == sorted(trainable(tuned.raw_model))
    assert_resume_is_exact(write_spec(tmp_path, {**tuned_raw, "name": "ft2"}, "ft2.yaml"), tmp_path, stop_after=3)


def test_a_gpt_lora_target_that_names_nothing_lists_gpts_layers(cli, tmp_path):
    spec = write_spec(tmp_path, {**GPT_RUN, "model": {**GPT, "lora": {"targets": ["q_proj"]}}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: model.lora.targets: 'q_proj' names no module of this gpt") and "c_attn" in err
    assert not (tmp_path / "runs").exists()
