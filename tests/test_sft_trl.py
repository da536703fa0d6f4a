"""Instruction data and NEFTune against TRL and transformers, on one tiny tokenizer and model.

The reference is the real thing: TRL's SFTTrainer prepares the dataset (its EOS, its
tokenization, its prompt/completion and assistant masks) and its collator pads each batch to
its own longest example; transformers' `neftune_post_forward_hook` draws the noise. Nothing is
downloaded: the tokenizer is a small BPE trained here (a BOS its post-processor adds, an EOS,
a pad token or none, and a chat template with and without `{% generation %}` tags), the model
a random-init Llama (or GPT-2) built from a config by noisecli itself."""

import json
import math

import pytest
import torch
import transformers
import yaml
from datasets import Dataset as HFDataset
from datasets import DatasetDict
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from noisecli.data import IGNORE, load_dataset
from noisecli.display import describe_run
from noisecli.engine.optim import loss_fn
from noisecli.models import build_model
from noisecli.noise import NoiseContext, build_noises
from noisecli.spec import NoiseSpec, dump_yaml, load_spec, read_saved_spec
from noisecli.trainer import Trainer
from tests.conftest import write_spec

# prompts that end in a space, so that joint tokenization merges it into the answer (" 12")
PAIRS = [{"prompt": f"Q{i}: add {i} and {i % 7}. Answer: " if i % 3 else f"Q{i}: add {i} and {i % 7}?\n",
          "response": f"{i + i % 7}" + " ok" * (i % 4)} for i in range(24)]
CHATS = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"},
                       {"role": "user", "content": "add " + "1 " * (i % 5)},
                       {"role": "assistant", "content": f"it is {i % 5}" + " ok" * (i % 3)}]} for i in range(16)]
TURN = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}"
        "<|end|>{% else %}<|user|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
# the same text, its assistant turns (content and end marker) inside {% generation %} tags
TAGGED = TURN.replace("<|assistant|>{{ m['content'] }}<|end|>",
                      "<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}")
LLAMA = {"kind": "hf", "config": {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                                  "max_position_embeddings": 64}}
GPT2 = {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}}
GPT = {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}
# TRL's SFTConfig sets a deprecated TrainingArguments field of transformers 5; nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")


def _tokenizer(folder, template: str, pad: bool, eos: bool = True):
    text = " ".join(f"{p['prompt']}{p['response']}" for p in PAIRS) + " ".join(
        m["content"] for c in CHATS for m in c["messages"])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    specials = {"bos_token": "<s>", **({"eos_token": "<|end|>"} if eos else {}),
                **({"pad_token": "<pad>"} if pad else {})}
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, **specials,
                                               additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"])
    bos = tok.convert_tokens_to_ids("<s>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.chat_template = template
    tok.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tokenizers (plain turns and tagged turns; one without a pad token) and the data files."""
    root = tmp_path_factory.mktemp("sft-trl")
    toks = {"plain": _tokenizer(root / "plain", TURN, pad=True), "tagged": _tokenizer(root / "tagged", TAGGED, True),
            "nopad": _tokenizer(root / "nopad", TURN, pad=False)}
    # a saved dataset with its own validation split keeps the training rows in their order
    for name, rows in (("pairs", PAIRS), ("chats", CHATS)):
        DatasetDict({"train": HFDataset.from_list(rows), "validation": HFDataset.from_list(rows[-4:])}
                    ).save_to_disk(root / name)
    return root, toks


def noisecli_data(root, model=LLAMA, **data):
    spec = load_spec(write_spec(root, {"data": {"kind": "sft", "test_fraction": 0, **data},
                                       "model": model}, "spec.yaml"))
    return spec, load_dataset(spec.data)


def trl_dataset(root, tok, rows, model, **config):
    args = SFTConfig(output_dir=str(root / "trl"), report_to=[], bf16=False, use_cpu=True, max_length=None,
                     **config)
    trainer = SFTTrainer(model=model, args=args, train_dataset=HFDataset.from_list(rows), processing_class=tok)
    assert isinstance(trainer.data_collator, DataCollatorForLanguageModeling)  # pads each batch to its longest
    return trainer.train_dataset, trainer.data_collator


def assert_same_as_trl(ds, prepared, collate, model, n=8):
    """Per example the same ids, noisecli's targets TRL's labels shifted by one, padding after;
    and on one batch the same loss, TRL's collated to the batch's longest, noisecli's padded."""
    for i in range(len(ds.x_train)):
        ids, labels = prepared[i]["input_ids"], prepared[i]["labels"]
        x, y = ds.x_train[i], ds.y_train[i]
        assert x[:len(ids)].tolist() == ids and (x[len(ids):] == ds.pad_id).all()
        assert y[:len(ids) - 1].tolist() == labels[1:] and (y[len(ids) - 1:] == IGNORE).all()
    batch = collate([prepared[i] for i in range(n)])
    model.eval()
    with torch.no_grad():
        theirs = model.model(**batch).loss
        ours = loss_fn(model(ds.x_train[:n]), ds.y_train[:n], "sft")
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


@pytest.mark.parametrize("model", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_prompt_completion_is_trls_tokens_masks_and_loss_with_bos_and_eos_scored(world, model):
    root, toks = world
    spec, ds = noisecli_data(root, model, path="pairs", tokenizer="plain")
    tok = toks["plain"]
    model = build_model(spec.model, ds)
    prepared, collate = trl_dataset(root, tok, [{"prompt": p["prompt"], "completion": p["response"]}
                                                for p in PAIRS[:len(ds.x_train)]], model.model)
    assert_same_as_trl(ds, prepared, collate, model)
    lengths = (ds.x_train != ds.pad_id).sum(1)
    ends = ds.x_train[torch.arange(len(lengths)), lengths - 1]
    assert (ds.x_train[:, 0] == tok.bos_token_id).all() and (ends == tok.eos_token_id).all()
    # the EOS is scored: the target before it is it
    assert (ds.y_train[torch.arange(len(lengths)), lengths - 2] == tok.eos_token_id).all()
    # joint moves the prompt's trailing space into the answer (" 12"), as TRL does; separate does not
    _, apart = noisecli_data(root, path="pairs", tokenizer="plain", tokenize="separate")
    real = [(a[a != ds.pad_id].tolist(), b[b != ds.pad_id].tolist()) for a, b in zip(ds.x_train, apart.x_train)]
    differ = [i for i, (a, b) in enumerate(real) if a != b]
    assert differ == [i for i in range(len(real)) if PAIRS[i]["prompt"].endswith(" ")]
    assert all(tok.decode(a) == tok.decode(b) for a, b in real)  # the same text, cut into other tokens


def test_a_format_template_and_the_chat_template_for_pairs_are_trls_on_the_same_text(world):
    root, toks = world
    template = "### Q:\n{prompt}\n### A:\n{response}"
    spec, ds = noisecli_data(root, path="pairs", tokenizer="plain", template=template)
    model = build_model(spec.model, ds)
    rows = [{"prompt": f"### Q:\n{p['prompt']}\n### A:\n", "completion": p["response"]} for p in PAIRS]
    assert_same_as_trl(ds, *trl_dataset(root, toks["plain"], rows[:len(ds.x_train)], model.model), model)
    _, chat = noisecli_data(root, path="pairs", tokenizer="plain", template="chat")
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "completion": [{"role": "assistant", "content": p["response"]}]} for p in PAIRS]
    assert_same_as_trl(chat, *trl_dataset(root, toks["plain"], rows[:len(chat.x_train)], model.model), model)


@pytest.mark.parametrize("loss_on", ["last", "all", "assistant"])
def test_conversations_are_trls_for_each_loss_on(world, loss_on):
    """last: TRL's conversational prompt-completion; all: TRL's messages; assistant: every
    assistant turn, found turn by turn without tags and by the tags with them, both equal to
    TRL's assistant_only_loss on the tagged template (the tags render no text)."""
    root, toks = world
    for name in ("plain", "tagged") if loss_on == "assistant" else ("plain",):
        spec, ds = noisecli_data(root, path="chats", messages="messages", tokenizer=name, loss_on=loss_on)
        model = build_model(spec.model, ds)
        rows = CHATS[:len(ds.x_train)]
        if loss_on == "last":
            rows = [{"prompt": c["messages"][:-1], "completion": c["messages"][-1:]} for c in rows]
        config = {"assistant_only_loss": True} if loss_on == "assistant" else {}
        tok = toks["tagged" if loss_on == "assistant" else name]
        assert_same_as_trl(ds, *trl_dataset(root, tok, rows, model.model, **config), model)
        if loss_on == "assistant":  # both answers of each conversation, their end markers too, nothing else
            scored = tok.decode(ds.y_train[0][ds.y_train[0] != IGNORE])
            assert scored == "hello 0<|end|>it is 0<|end|>"
            assert ds.info["loss_on"] == ("assistant tokens ({% generation %} tags)" if name == "tagged"
                                          else "assistant turns")


def neftune(ds, model, **options):
    spec = NoiseSpec(kind="embedding", factor=5.0, **options)
    (noise,) = build_noises([spec], NoiseContext(model, ds, 100, torch.device("cpu"), seed=0))
    return noise


@pytest.mark.parametrize("tokenizer", ["plain", "nopad"])
def test_length_batch_is_the_transformers_hook_under_dynamic_padding(world, tokenizer):
    """The same examples collated by TRL (each batch padded to its longest), the same embeddings
    and the same draws: noisecli's length: batch adds exactly what the hook adds on the batch's
    positions and nothing past them. With no pad token the EOS is the padding (TRL's choice too),
    and the length still counts the EOS that ends each example."""
    from transformers.integrations.neftune import neftune_post_forward_hook

    root, toks = world
    spec, ds = noisecli_data(root, path="pairs", tokenizer=tokenizer)
    tok = toks[tokenizer]
    assert ds.pad_id == (tok.pad_token_id if tokenizer == "plain" else tok.eos_token_id)
    assert ds.pad_ends == (tokenizer == "nopad")
    model = build_model(spec.model, ds)
    prepared, collate = trl_dataset(root, toks[tokenizer], [{"prompt": p["prompt"], "completion": p["response"]}
                                                            for p in PAIRS[:len(ds.x_train)]], model.model)
    rows = [1, 4, 7, 10, 13]  # a batch shorter than the padded length, of ragged examples
    x = ds.x_train[rows]
    dynamic = collate([prepared[i] for i in rows])["input_ids"]
    longest = dynamic.shape[1]
    assert longest < x.shape[1] and torch.equal(x[:, :longest], dynamic)
    emb = model.get_input_embeddings().train()
    emb.neftune_noise_alpha = 5.0
    clean = emb(dynamic).detach()
    torch.manual_seed(3)
    theirs = neftune_post_forward_hook(emb, (dynamic,), clean) - clean  # (B, L_b, d)
    mag = 5.0 / math.sqrt(longest * clean.shape[-1])
    draw = torch.rand(*x.shape, clean.shape[-1]) * 2 - 1
    draw[:, :longest] = theirs / mag  # the hook's own draws, unscaled
    ours = neftune(ds, model, length="batch").added((x,), emb(x).detach(), draw, 5.0)
    assert torch.allclose(ours[:, :longest], theirs, atol=1e-7, rtol=1e-5)
    assert torch.equal(ours[:, longest:], torch.zeros_like(ours[:, longest:]))
    # and differs from each example's own length, which the shorter examples of the batch show
    own = neftune(ds, model).added((x,), emb(x).detach(), draw, 5.0)
    assert not torch.allclose(own[:, :longest], theirs)


def hooked_diff(noise, model, x, y):
    """What the attached hook adds to the embeddings of x on one training step."""
    emb = model.get_input_embeddings()
    clean = emb(x).detach()
    noise.attach(model)
    model.train()
    noise.transform_input(x, 5.0, y)
    noise.before_forward(5.0)
    diff = emb(x).detach() - clean
    noise.detach()
    return diff, clean


def test_on_prompt_and_on_response_leave_the_other_part_clean_with_the_same_draws(world):
    root, toks = world
    spec, ds = noisecli_data(root, path="pairs", tokenizer="plain")
    model = build_model(spec.model, ds)
    x, y = ds.x_train[:8], ds.y_train[:8]
    response = torch.cat([torch.zeros(8, 1, dtype=torch.bool), y[:, :-1] != IGNORE], 1)
    real = x != ds.pad_id
    everywhere, _ = hooked_diff(neftune(ds, model), model, x, y)
    for on, part, other in (("prompt", real & ~response, response), ("response", response, real & ~response)):
        diff, _ = hooked_diff(neftune(ds, model, on=on), model, x, y)
        assert torch.equal(diff[other], torch.zeros_like(diff[other]))  # the other part: exactly clean
        assert (diff[part].abs().sum(-1) > 0).all()
        assert torch.equal(diff[part], everywhere[part])  # same stream, same scale (L is the whole example's)
        assert torch.equal(diff[~real], torch.zeros_like(diff[~real]))


def test_scale_relative_is_trl_pr_904s_formula(world):
    """e * (1 + alpha * U(-1, 1)) on the real tokens, padding clean: the noise is alpha times the
    embedding times the draw, whatever the example's length."""
    root, _ = world
    spec, ds = noisecli_data(root, path="pairs", tokenizer="plain")
    model = build_model(spec.model, ds)
    x, y = ds.x_train[:8], ds.y_train[:8]
    noise = neftune(ds, model, scale="relative")
    g = torch.Generator().set_state(noise.generator.get_state())
    diff, clean = hooked_diff(noise, model, x, y)
    u = torch.rand(clean.shape, generator=g) * 2 - 1  # the draw the hook made
    real = (x != ds.pad_id).unsqueeze(-1)
    assert torch.allclose(diff, 5.0 * clean * u * real, atol=1e-7)
    assert noise.rms_ratio() == pytest.approx(5.0 / math.sqrt(3), rel=1e-6)


NEW_OPTIONS = [{"length": "batch", "on": "prompt"}, {"length": "batch", "on": "response", "scale": "relative",
                                                      "factor": 0.3}]


def pairs_spec(tmp_path, noise, name="n", **train):
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return write_spec(tmp_path, {"name": name, "data": {"kind": "sft", "path": "i.jsonl"}, "model": GPT,
                                 "noise": {"kind": "embedding", "factor": 5.0, **noise},
                                 "train": {"max_steps": 6, "eval_every": 3, "batch_size": 4, "lr": 3e-3, **train}})


@pytest.mark.parametrize("noise", NEW_OPTIONS, ids=["batch-prompt", "batch-response-relative"])
def test_the_new_options_read_nothing_back_in_the_step_and_resume_exactly(tmp_path, monkeypatch, noise):
    from tests.test_noise import assert_steps_never_read_back
    from tests.test_train import assert_resume_is_exact

    spec = pairs_spec(tmp_path, noise)
    assert_steps_never_read_back(Trainer(load_spec(spec), tmp_path / "sync", quiet=True).setup(), monkeypatch)
    assert_resume_is_exact(spec, tmp_path, stop_after=4)


def test_the_new_options_stack_as_each_point_trains_alone(tmp_path):
    """sweep --batched: each member's positions (on) ride on its own draws, its L_b is its own batch's."""
    from noisecli.batched import train_group
    from noisecli.points import train_point
    from noisecli.spec import spec_from_dict
    from tests.conftest import metrics_rows
    from tests.test_batched import assert_close_rows

    for i, noise in enumerate(NEW_OPTIONS):
        raw = yaml.safe_load(pairs_spec(tmp_path, noise).read_text())
        raw["data"]["path"] = str(tmp_path / "i.jsonl")
        specs = [spec_from_dict({**raw, "name": f"p{i}-{s}", "seed": s, "device": "cpu"}) for s in (0, 1)]
        assert [o.state for o in train_group(specs, tmp_path / "batched", lambda *a: None)] == ["completed"] * 2
        for spec in specs:
            train_point(spec, tmp_path / "alone", lambda *a: None)
            assert_close_rows(metrics_rows(tmp_path / "batched" / spec.name), metrics_rows(tmp_path / "alone" / spec.name))


def test_under_torchrun_each_rank_noises_its_rows_as_one_process_does(world):
    """What the DDP strategy does, rank by rank: transform_input on the global batch, the forward
    on this rank's rows. L_b is the global batch's longest and the positions `on` allows are the
    global batch's rows, so each rank adds exactly its rows of what one process adds (a rank's
    own longest example would give another scale). The end-to-end torchrun run of the default
    options is tests/test_distributed.py's."""
    from noisecli.distributed import World

    root, _ = world
    spec, ds = noisecli_data(root, path="pairs", tokenizer="plain")
    model = build_model(spec.model, ds)
    emb = model.get_input_embeddings()
    lengths = (ds.x_train != ds.pad_id).sum(1)
    rows = lengths.argsort(descending=True)[[0, 5, 9, 14, 20]]  # the longest first: rank 1's are shorter
    x, y = ds.x_train[rows], ds.y_train[rows]
    one, _ = hooked_diff(neftune(ds, model, **NEW_OPTIONS[0]), model, x, y)
    for rank in (0, 1):
        ctx = NoiseContext(model, ds, 100, torch.device("cpu"), seed=0, world=World(rank=rank, size=2),
                           global_batch=len(x))
        (noise,) = build_noises([NoiseSpec(kind="embedding", factor=5.0, **NEW_OPTIONS[0])], ctx)
        mine = slice(*ctx.world.rows(len(x)))
        clean = emb(x[mine]).detach()
        noise.attach(model)
        model.train()
        noise.transform_input(x, 5.0, y)
        noise.before_forward(5.0)
        diff = emb(x[mine]).detach() - clean
        noise.detach()
        assert torch.equal(diff, one[mine])
    assert lengths[rows[3:]].max() < lengths[rows].max()  # rank 1's own longest is not the batch's


def test_the_header_says_the_noise_to_embedding_ratio_before_training(world, tmp_path):
    """alpha 5 on an untrained embedding is several times the signal, and the header says so:
    RMS of alpha / sqrt(3 L_i d) over the real tokens against the embeddings' RMS."""
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    spec = write_spec(tmp_path, {"name": "h", "data": {"kind": "sft", "path": "i.jsonl"}, "model": GPT,
                                 "noise": {"kind": "embedding", "factor": 5.0}, "train": {"max_steps": 1}})
    trainer = Trainer(load_spec(spec), tmp_path / "runs", quiet=True).setup()
    x = trainer.data.x_train
    emb = trainer.raw_model.get_input_embeddings()(x).detach()
    real = x != 0
    lengths = real.sum(1, keepdim=True)
    noise_ms = (real * 25 / (3 * lengths * emb.shape[-1])).sum() / real.sum()
    signal_ms = emb.pow(2).mean(-1)[real].mean()
    ratio = math.sqrt(noise_ms / signal_ms)
    assert trainer.noises[0].rms_ratio() == pytest.approx(ratio, rel=1e-4) and ratio > 1
    assert f"noise embedding 5 (noise/embedding RMS {ratio:.2g}); " in describe_run(trainer)


def test_a_run_saved_before_these_keys_resumes_and_evaluates_as_it_trained(cli, tmp_path):
    """spec.yaml without data.eos, bos, template, tokenize, loss_on and noise.on, scale (as an older
    noisecli wrote it) reads as no EOS, no BOS, separate, last, all, absolute: the run is the same
    run for a spec that says so, evaluates as it trained, and today's defaults are another run."""
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    old = {"eos": False, "bos": False, "tokenize": "separate", "loss_on": "last"}
    raw = {"name": "old", "data": {"kind": "sft", "path": "i.jsonl", **old}, "model": GPT,
           "noise": {"kind": "embedding", "factor": 5.0}, "train": {"max_steps": 4, "eval_every": 2, "batch_size": 4}}
    spec = write_spec(tmp_path, raw)
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    saved = tmp_path / "runs" / "old" / "spec.yaml"
    d = yaml.safe_load(saved.read_text())
    for key in ("eos", "bos", "template", "tokenize", "loss_on"):
        del d["data"][key]
    del d["noise"]["on"], d["noise"]["scale"]
    saved.write_text(dump_yaml(d))
    assert read_saved_spec(saved)["data"]["eos"] is False and read_saved_spec(saved)["noise"]["scale"] == "absolute"
    logged = json.loads((tmp_path / "runs" / "old" / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0 and "different spec" not in err, err
    code, out, err = cli("eval", tmp_path / "runs" / "old", "--format", "json")
    assert code == 0 and json.loads(out)["val_loss"] == pytest.approx(logged, abs=1e-5), err
    raw["data"] = {"kind": "sft", "path": "i.jsonl"}
    code, _, err = cli("train", write_spec(tmp_path, raw), "--runs-dir", tmp_path / "runs", "-q")
    assert code == 2 and "data.eos: False -> True" in err


TEMPLATE_BAD = [
    ({"template": "Q: {prompt}\nA: {respnse}"},
     "error: data.template: {respnse} is not filled in; did you mean {response}? (only {prompt} and {response} are)"),
    ({"template": "A: {response} Q: {prompt}"},
     "error: data.template: must hold {prompt} and {response} once each, {prompt} first, or be 'chat'; "
     "got 'A: {response} Q: {prompt}'"),
    ({"template": "chat"}, "error: data.template: 'chat' renders each pair with the tokenizer's chat template; set "
                           "data.tokenizer (a Hugging Face tokenizer with one)"),
    ({"loss_on": "assitant"}, "error: data.loss_on: must be one of assistant, last, all; got 'assitant'; "
                              "did you mean 'assistant'?"),
    ({"tokenize": "jont"}, "error: data.tokenize: must be one of joint, separate; got 'jont'; did you mean 'joint'?"),
    ({"eos": "yes please"}, "error: data.eos: must be true or false, got 'yes please' (str)"),
    ({"bos": 2}, "error: data.bos: must be true or false, got 2 (int)"),
]
NOISE_BAD = [
    ({}, {"on": "promt"}, "error: noise.on: must be one of all, prompt, response; got 'promt'; did you mean 'prompt'?"),
    ({}, {"scale": "relativ"}, "error: noise.scale: must be one of absolute, relative; got 'relativ'; "
                               "did you mean 'relative'?"),
    ({}, {"length": "batches"}, "error: noise.length: must be one of example, batch, padded; got 'batches'; "
                                "did you mean 'batch'?"),
    ({"loss_on": "all"}, {"on": "prompt"}, "error: noise.on: 'prompt' with data.loss_on: all: every token is scored, "
                                           "so no prompt is told from the response; use noise.on: all, or another "
                                           "data.loss_on"),
]


@pytest.mark.parametrize("data,noise,message", [(d, {}, m) for d, m in TEMPLATE_BAD] + NOISE_BAD,
                         ids=[m[7:40] for _, m in TEMPLATE_BAD] + [m[7:40] for _, _, m in NOISE_BAD])
def test_each_new_keys_mistakes_are_one_line_exit_2_and_nothing_written(cli, tmp_path, data, noise, message):
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    spec = write_spec(tmp_path, {"data": {"kind": "sft", "path": "i.jsonl", **data}, "model": GPT,
                                 "noise": {"kind": "embedding", **noise}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert (code, err.strip()) == (2, message)
    assert not (tmp_path / "runs").exists()


def test_mistakes_seen_only_with_the_tokenizer_or_the_data_are_one_line_too(world, cli, tmp_path):
    root, _ = world
    _tokenizer(tmp_path / "noeos", TURN, pad=True, eos=False)
    _tokenizer(tmp_path / "badtags", TURN + "{% if false %}{% generation %}x{% endgeneration %}{% endif %}", True)
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    chats = str(root / "chats")
    cases = [
        ({"kind": "markov"}, {"on": "response"},
         "error: noise.on: 'response' needs instruction data (data.kind: sft), where a prompt and a response are told "
         "apart; data kind 'markov' has neither (use noise.on: all)"),
        ({"kind": "sft", "path": chats, "messages": "messages", "template": "chat", "tokenizer": str(root / "plain")},
         {}, "error: data.template: applies to prompt/response pairs; data.messages are rendered with the "
             "tokenizer's chat template (leave data.template out)"),
        ({"kind": "sft", "path": "i.jsonl", "tokenizer": "noeos"}, {},
         "error: data.eos: the tokenizer {dir}/noeos has no end-of-sequence token to end responses with; set "
         "data.eos: false, or use a tokenizer with one"),
        ({"kind": "sft", "path": chats, "messages": "messages", "tokenizer": "badtags"}, {},
         "error: data.loss_on: example 0 of 'train': the {{% generation %}} tags of {dir}/badtags's chat template "
         "mark none of its tokens; check the template, or use data.loss_on: last"),
    ]
    for data, noise, message in cases:
        spec = write_spec(tmp_path, {"data": data, "model": GPT, "noise": {"kind": "embedding", **noise}})
        code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
        assert (code, err.strip()) == (2, message.format(dir=tmp_path)) and not (tmp_path / "runs").exists()
