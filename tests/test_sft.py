"""Instruction data (`data.kind: sft`): real padded batches from real files, through the real loop."""

import json
import math

import pytest
import torch
from torch.nn import functional as F

from noisecli.engine.evaluation import measure
from noisecli.data import IGNORE
from noisecli.noise.token import prompt_mask
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
from tests.conftest import write_spec

# prompts and responses of very different lengths, so batches are really padded
EXAMPLES = [{"prompt": f"Q{i}: " + "x" * (i % 7), "response": f" answer {i}" + "!" * (i % 11)} for i in range(60)]
GPT = {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16}


@pytest.fixture
def sft_file(tmp_path):
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    return path


def sft_spec(folder, noise=None, data=None, model=None, **train):
    return write_spec(folder, {"name": "sft", "data": {"kind": "sft", "path": "instructions.jsonl", **(data or {})},
                               "model": model or GPT, "noise": noise or {"kind": "none"},
                               "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, **train}})


def setup(spec) -> Trainer:
    return Trainer(load_spec(spec), spec.parent / "runs", quiet=True).setup()


@pytest.mark.parametrize("eos", [True, False])
def test_examples_are_right_padded_with_targets_on_the_response_and_its_eos(sft_file, eos):
    """data.eos (the default): each response ends with the end-of-sequence id, for characters the
    vocabulary's last (a reserved id, padding stays 0), and it is scored; eos: false is the
    sequence as noisecli built it before (what a resumed older run reads)."""
    trainer = setup(sft_spec(sft_file.parent, data={"eos": eos}))
    ds = trainer.data
    assert ds.task == "sft" and ds.pad_id == 0 and ds.x_train.shape[0] + ds.x_val.shape[0] + ds.x_test.shape[0] == 60
    chars = len(set("".join(e["prompt"] + e["response"] for e in EXAMPLES)))
    assert ds.n_outputs == chars + 1 + eos and not ds.pad_ends
    longest = max(len(e["prompt"]) + len(e["response"]) for e in EXAMPLES) + eos
    assert ds.block_size == longest == ds.x_train.shape[1]
    x, y = torch.cat([ds.x_train, ds.x_val, ds.x_test]), torch.cat([ds.y_train, ds.y_val, ds.y_test])
    seen = []
    for xi, yi in zip(x, y):
        length = int((xi != 0).sum())
        assert (xi[length:] == 0).all() and (xi[:length] != 0).all()  # right padding, nothing inside
        assert (xi[length - 1] == chars + 1) == eos and (xi[:length - 1] <= chars).all()  # EOS last, only there
        scored = (yi != IGNORE).nonzero().flatten()
        # targets: the next token on every response position (its EOS included), and nothing else
        assert torch.equal(yi[scored], xi[scored + 1])
        assert torch.equal(scored, torch.arange(length - scored.numel() - 1, length - 1))
        seen.append((length, int(scored.numel())))
    # each example scores exactly its response's characters, and its EOS
    assert sorted(seen) == sorted((len(e["prompt"]) + len(e["response"]) + eos, len(e["response"]) + eos)
                                  for e in EXAMPLES)


def test_the_loss_counts_response_tokens_only(sft_file):
    trainer = setup(sft_spec(sft_file.parent))
    x, y = trainer.data.x_val, trainer.data.y_val
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(x)
        total, count = (lambda s: (s["loss"], s["count"]))(measure(trainer, "val"))
        mask = y != IGNORE
        by_hand = F.cross_entropy(logits[mask], y[mask], reduction="sum")
        # changing what the prompt and the padding predict changes nothing
        noisy_logits = logits.clone()
        noisy_logits[~mask] = torch.randn_like(noisy_logits[~mask]) * 10
        assert torch.allclose(F.cross_entropy(noisy_logits[mask], y[mask], reduction="sum"), by_hand)
    assert count.item() == mask.sum().item()
    assert total.item() == pytest.approx(by_hand.item(), rel=1e-5)


def embedding_diff(trainer, alpha, x):
    noise = trainer.noises[0]
    emb = trainer.raw_model.get_input_embeddings()
    clean = emb(x).detach()
    noise.attach(trainer.raw_model)
    noise.before_forward(alpha)
    trainer.raw_model.train()
    diff = emb(x).detach() - clean
    noise.detach()
    return diff


def test_neftune_on_real_padded_batches_scales_per_example_and_spares_padding(sft_file):
    alpha = 5.0
    trainer = setup(sft_spec(sft_file.parent, noise={"kind": "embedding", "factor": alpha}))
    x, _ = trainer.batches.next()  # a real training batch
    d = trainer.raw_model.get_input_embeddings().embedding_dim
    diff = embedding_diff(trainer, alpha, x)
    lengths = (x != 0).sum(1)
    assert len(set(lengths.tolist())) > 1  # the batch really is ragged
    for i, n in enumerate(lengths.tolist()):
        bound = alpha / math.sqrt(n * d)
        assert diff[i, :n].abs().max() <= bound + 1e-6
        assert diff[i, :n].abs().max() > 0.9 * bound
        assert torch.equal(diff[i, n:], torch.zeros_like(diff[i, n:]))  # exactly zero on padding


def test_neftune_padded_length_reproduces_the_transformers_hook(sft_file):
    """transformers' neftune_post_forward_hook: mag = alpha / sqrt(T * d) for every example,
    with T the padded length, and uniform noise everywhere, padding included (issue 34659)."""
    alpha = 5.0
    trainer = setup(sft_spec(sft_file.parent, noise={"kind": "embedding", "factor": alpha, "length": "padded"}))
    x, _ = trainer.batches.next()
    d = trainer.raw_model.get_input_embeddings().embedding_dim
    diff = embedding_diff(trainer, alpha, x)
    mag = alpha / math.sqrt(x.shape[1] * d)
    assert diff.abs().max() <= mag + 1e-6 and diff.abs().max() > 0.99 * mag
    padding = x == 0
    assert padding.any() and (diff[padding].abs().sum(-1) > 0).all()  # padding is perturbed too
    assert diff.mean().abs() < 4 * mag / math.sqrt(3 * diff.numel())  # U(-mag, mag): centred


@pytest.mark.parametrize("include_prompt", [True, False])
def test_token_noise_never_touches_padding_and_prompts_only_when_asked(sft_file, include_prompt):
    trainer = setup(sft_spec(sft_file.parent, noise={"kind": "token", "factor": 1.0,
                                                      "include_prompt": include_prompt}))
    x, y = trainer.batches.next()
    out = trainer.noises[0].transform_input(x, 1.0, y)
    padding, prompt = x == 0, prompt_mask(y)
    assert torch.equal(out[padding], x[padding])
    response = ~padding & ~prompt
    assert (out[response] != x[response]).float().mean() > 0.8  # p = 1: nearly all replaced (some by themselves)
    changed_in_prompt = (out[prompt] != x[prompt]).float().mean()
    assert changed_in_prompt > 0.8 if include_prompt else changed_in_prompt == 0
    # the prompt mask ends on the last prompt token: the one whose target is the first response token
    first = (y != IGNORE).int().argmax(1)
    assert all(prompt[i, : first[i] + 1].all() and not prompt[i, first[i] + 1:].any() for i in range(len(x)))


@pytest.mark.parametrize("model", [GPT, {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2,
                                                                   "n_embd": 16, "resid_pdrop": 0, "embd_pdrop": 0,
                                                                   "attn_pdrop": 0}}])
def test_gpt_and_hf_train_on_instruction_data_and_eval_agrees(cli, sft_file, model):
    spec = sft_spec(sft_file.parent, noise={"kind": "embedding", "factor": 5.0}, model=model,
                    **{"epochs": 3, "lr": 1e-2})
    code, out, err = cli("train", spec, "--runs-dir", sft_file.parent / "runs")
    assert code == 0, err
    assert "examples padded to" in out and "loss on response tokens" in out
    rows = [json.loads(line) for line in (sft_file.parent / "runs" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    code, out, err = cli("eval", sft_file.parent / "runs" / "sft", "--format", "json")
    assert code == 0 and json.loads(out)["val_loss"] == pytest.approx(rows[-1]["val_loss"], abs=1e-5)


def test_truncation_is_counted_in_the_status(cli, sft_file):
    spec = sft_spec(sft_file.parent, data={"max_length": 16})
    code, _, err = cli("train", spec, "--runs-dir", sft_file.parent / "runs", "-q")
    assert code == 0, err
    dataset = json.loads((sft_file.parent / "runs" / "sft" / "status.json").read_text())["dataset"]
    expected = sum(len(e["prompt"]) + len(e["response"]) + 1 > 16 for e in EXAMPLES)  # + 1: the EOS
    assert dataset["max_length"] == 16 and dataset["truncated"] == expected > 0


def test_csv_json_and_a_saved_dataset_with_its_own_validation_split(tmp_path):
    import csv

    import datasets

    rows = EXAMPLES[:20]
    with open(tmp_path / "ex.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["prompt", "response"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "ex.json").write_text(json.dumps(rows))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(EXAMPLES[:40]),
                          "validation": datasets.Dataset.from_list(EXAMPLES[40:])}).save_to_disk(tmp_path / "saved")
    for path, n_val in (("ex.csv", 4), ("ex.json", 4), ("saved", 20)):
        spec = write_spec(tmp_path, {"data": {"kind": "sft", "path": path}, "model": GPT}, "s.yaml")
        ds = Trainer(load_spec(spec), tmp_path / "runs", quiet=True).setup().data
        assert ds.x_val.shape[0] == n_val, path


BAD = [
    ({"prompt": "question"}, "error: data.prompt: no column 'question' in the 'train' examples of {path} "
                             "(columns: prompt, response)"),
    ({"max_length": 6}, "error: data.max_length: example 2 of 'train' has a prompt of 6 tokens, which leaves no "
                        "room for its response in 6; raise data.max_length"),
    ({"messages": "prompt"}, "error: data.messages: rendering messages needs a chat template: set data.tokenizer "
                             "(a Hugging Face tokenizer with one), or use data.prompt and data.response"),
    ({"path": "nothing.jsonl"}, "error: data.path: file or folder not found: {dir}/nothing.jsonl"),
]


@pytest.mark.parametrize("data,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_instruction_data_is_one_line_exit_2(cli, sft_file, data, message):
    spec = sft_spec(sft_file.parent, data=data)
    code, out, err = cli("train", spec, "--runs-dir", sft_file.parent / "runs")
    assert (code, err.strip()) == (2, message.format(path=sft_file, dir=sft_file.parent))
    assert not (sft_file.parent / "runs").exists()


def test_an_empty_response_is_named(cli, tmp_path):
    (tmp_path / "instructions.jsonl").write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" +
                                                 json.dumps({"prompt": "c", "response": ""}) + "\n")
    code, _, err = cli("validate", sft_spec(tmp_path))
    assert (code, err.strip()) == (2, "error: data.response: example 1 of 'train' has an empty response; nothing "
                                      "to learn from it (remove it, or check data.response)")


def chat_files(tmp_path, examples: list[dict], text: str, vocab_size: int):
    """An offline byte-level BPE tokenizer trained on `text` with a chat template (<|end|> its
    EOS) in tmp_path/tok, and the examples as one-turn chats in tmp_path/chat.jsonl."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>",
                                               additional_special_tokens=["<|user|>", "<|assistant|>"])
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok.save_pretrained(tmp_path / "tok")
    chats = [{"messages": [{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["response"]}]}
             for e in examples]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return tok


def test_messages_are_rendered_with_the_tokenizers_chat_template_and_scored_on_the_last_answer(tmp_path):
    tok = chat_files(tmp_path, EXAMPLES, " ".join(f"{m['prompt']} {m['response']}" for m in EXAMPLES), 120)
    spec = write_spec(tmp_path, {"data": {"kind": "sft", "path": "chat.jsonl", "messages": "messages",
                                          "tokenizer": "tok"}, "model": GPT})
    ds = Trainer(load_spec(spec), tmp_path / "runs", quiet=True).setup().data
    assert ds.pad_id == tok.eos_token_id and ds.n_outputs == len(tok)
    # every conversation ends with <|end|>, the padding id too: the noise counts it (and the one inside) as real
    assert ds.pad_ends and "noise_misreads" not in ds.info
    x, y = torch.cat([ds.x_train, ds.x_val, ds.x_test]), torch.cat([ds.y_train, ds.y_val, ds.y_test])
    answers = sorted(e["response"] + "<|end|>" for e in EXAMPLES)
    scored = sorted(tok.decode(yi[yi != IGNORE].tolist()) for yi in y)
    assert scored == answers  # the loss is on the last assistant message (and its end marker) only
    prompts = {tok.decode(xi[: int((yi != IGNORE).int().argmax()) + 1].tolist()) for xi, yi in zip(x, y)}
    assert "<|user|>Q3: xxx<|end|><|assistant|>" in prompts


def test_a_broken_jsonl_line_is_named(cli, tmp_path):
    (tmp_path / "instructions.jsonl").write_text(json.dumps(EXAMPLES[0]) + "\n{bad json\n")
    code, _, err = cli("validate", sft_spec(tmp_path))
    assert code == 2 and err.startswith("error: data.path: instructions.jsonl line 2: not JSON (")


@pytest.mark.parametrize("noise", [{"kind": "embedding", "factor": 5.0}, {"kind": "token", "factor": 0.2,
                                                                          "include_prompt": False}])
def test_an_interrupted_instruction_run_resumes_exactly(sft_file, noise):
    from tests.test_train import assert_resume_is_exact

    assert_resume_is_exact(sft_spec(sft_file.parent, noise=noise), sft_file.parent, stop_after=5)


def test_a_context_too_short_for_instruction_data_names_max_length(sft_file, cli):
    spec = sft_spec(sft_file.parent, data={"max_length": 40}, model={
        "kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 16}})
    code, _, err = cli("train", spec, "--runs-dir", sft_file.parent / "runs")
    assert code == 2 and "error: data.max_length: 40 is longer than the model's context (16); lower data.max_length" \
        in err


@pytest.mark.parametrize("factor,words", [(0.01, "at std 0.01 about half"), (2.0, "at std 2 most of them move")])
def test_input_noise_on_token_data_says_the_factor_it_was_given(sft_file, cli, factor, words):
    spec = sft_spec(sft_file.parent, noise={"kind": "input", "factor": factor})
    code, _, err = cli("validate", spec)
    assert code == 2 and "gives integer token ids" in err and words in err
