"""`noisecli eval RUN --generate N`: responses to held-out prompts of tiny instruction runs trained
here (characters with a gpt, an offline BPE tokenizer's chat template with an hf gpt2), checked
against a greedy loop written by hand over the checkpoint's model and the dataset's own tensors."""

import json
import random
from pathlib import Path

import pytest
import torch

from noisecli.data import IGNORE
from noisecli.generate import draw, exact_match
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
from tests.conftest import TINY, write_spec
from tests.test_sft import chat_files
from tests.test_train import train_run

_r = random.Random(0)
# every other example the same pair (the model learns it: an exact match with its EOS), the rest
# a random answer no model can guess from its prompt (never a match)
EXAMPLES = [{"prompt": "hi?", "response": " hello"} if i % 2 == 0 else
            {"prompt": f"n{i}?", "response": " " + "".join(_r.choice("abcdefg") for _ in range(5))}
            for i in range(48)]
CHARS = sorted(set("".join(e["prompt"] + e["response"] for e in EXAMPLES)))
GPT = {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32}


def chars_spec(folder, name="g", **data):
    (folder / "instructions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    return write_spec(folder, {"name": name, "data": {"kind": "sft", "path": "instructions.jsonl", **data},
                               "model": GPT, "noise": {"kind": "none"}, "device": "cpu",
                               "train": {"epochs": 8, "batch_size": 8, "lr": 1e-2}}, f"{name}.yaml")


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """(spec, run folder) of a character gpt trained 32 steps; data.eos on, a test split."""
    folder = tmp_path_factory.mktemp("chars")
    spec = chars_spec(folder)
    train_run(spec, folder / "runs")
    return spec, folder / "runs" / "g"


def trained_model(spec, run, checkpoint="last"):
    """The run's dataset, and its model with the checkpoint's weights, built without noisecli's eval."""
    trainer = Trainer(load_spec(spec), run.parent.parent / "elsewhere", quiet=True).setup()
    trainer.raw_model.load_state_dict(torch.load(run / "checkpoints" / f"{checkpoint}.pt", weights_only=True)["model"])
    return trainer.data, trainer.raw_model.eval()


def split_rows(x, y, eos):
    """Per example: (the prompt training fed: every id up to the one whose target is the first scored
    token, the reference: the scored ids up to the EOS), read from the dataset's tensors."""
    out = []
    for xi, yi in zip(x, y):
        first = int((yi != IGNORE).int().argmax())
        scored = yi[yi != IGNORE].tolist()
        out.append((xi[:first + 1].tolist(), scored[:scored.index(eos)] if eos in scored else scored))
    return out


@torch.no_grad()
def greedy_by_hand(model, prompt, budget, eos):
    ids = list(prompt)
    for _ in range(budget):
        token = int(model(torch.tensor([ids]))[0, -1].argmax())
        if token == eos:
            break
        ids.append(token)
    return ids[len(prompt):]


def decode_chars(ids):
    return "".join(CHARS[i - 1] for i in ids)


def generations(cli, run, *args):
    code, out, err = cli("eval", run, "--format", "json", *args)
    assert code == 0, err
    summary = json.loads(out)["generation"]
    return summary, [json.loads(line) for line in Path(summary["file"]).read_text().splitlines()]


def test_greedy_responses_are_the_argmax_loop_on_the_test_prompts_as_training_fed_them(cli, char_run):
    spec, run = char_run
    summary, rows = generations(cli, run, "--generate", "4")
    data, model = trained_model(spec, run)
    eos = len(CHARS) + 1
    assert summary["split"] == "test" and summary["prompts"] == len(rows) == 4
    assert summary["available"] == len(data.x_test) > 4 and summary["file"] == str(run / "generations-last.jsonl")
    assert set(rows[0]) == {"index", "prompt", "reference", "generated", "generated_tokens", "reference_tokens",
                            "ended_with_eos", "exact_match"}
    for i, (row, (prompt, reference)) in enumerate(zip(rows, split_rows(data.x_test, data.y_test, eos))):
        by_hand = greedy_by_hand(model, prompt, data.block_size - len(prompt), eos)
        assert row["index"] == i and row["prompt"] == decode_chars(prompt)  # the test split's rows, in order
        assert row["reference"] == decode_chars(reference) and row["reference_tokens"] == len(reference)
        assert row["generated"] == decode_chars(by_hand) and row["generated_tokens"] == len(by_hand)
        assert row["ended_with_eos"] == (len(by_hand) < data.block_size - len(prompt))
    again = (run / "generations-last.jsonl").read_bytes()
    generations(cli, run, "--generate", "4")
    assert (run / "generations-last.jsonl").read_bytes() == again  # greedy is deterministic
    assert summary["mean_tokens"] == sum(r["generated_tokens"] for r in rows) / 4
    assert summary["mean_reference_tokens"] == sum(r["reference_tokens"] for r in rows) / 4
    assert summary["exact_match"] == sum(r["exact_match"] for r in rows) / 4 and summary["decoding"] == "greedy"


def test_a_memorized_answer_is_an_exact_match_that_ends_at_its_eos_and_a_random_one_is_not(cli, char_run):
    _, run = char_run
    code, table, err = cli("eval", run, "--generate", "100")  # more than the split holds: all of it
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "generations-last.jsonl").read_text().splitlines()]
    learned = [r for r in rows if r["prompt"] == "hi?"]
    guessed = [r for r in rows if r["prompt"] != "hi?"]
    assert learned and guessed and len(rows) == 10
    for r in learned:
        assert (r["generated"], r["generated_tokens"], r["ended_with_eos"], r["exact_match"]) == (" hello", 6, True,
                                                                                                  True)
    assert not any(r["exact_match"] for r in guessed) and all(r["generated"] != r["reference"] for r in guessed)
    for r in rows:
        assert r["exact_match"] == (r["generated"].strip() == r["reference"].strip())
    rate = len(learned) / len(rows)
    assert "all 10 prompts of the test split, greedy" in table and f"exact match     {rate:.3f} ({len(learned)} " \
        "of 10: the generated response equals the reference after stripping whitespace at both ends)" in table
    assert f"wrote {run / 'generations-last.jsonl'}" in table and "val_loss" in table


def test_exact_match_strips_whitespace_and_nothing_else():
    assert exact_match(" hello\n", "hello") and exact_match("a b", " a b ")
    assert not exact_match("Hello", "hello") and not exact_match("a  b", "a b") and not exact_match("", "x")


def test_sampling_is_seeded_reproducible_and_a_tiny_top_p_is_greedy(cli, char_run, tmp_path):
    _, run = char_run
    args = ("--generate", "6", "--temperature", "2")
    _, greedy = generations(cli, run, "--generate", "6")
    summary, one = generations(cli, run, *args, "--seed", "1", "--out", tmp_path / "a.jsonl")
    _, same = generations(cli, run, *args, "--seed", "1", "--out", tmp_path / "b.jsonl")
    _, other = generations(cli, run, *args, "--seed", "2", "--out", tmp_path / "c.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() and one == same
    assert [r["generated"] for r in one] != [r["generated"] for r in other]
    assert [r["generated"] for r in one] != [r["generated"] for r in greedy]
    assert summary["decoding"] == "sampled" and (summary["temperature"], summary["top_p"], summary["seed"]) == (2, 1, 1)
    _, nucleus = generations(cli, run, *args, "--top-p", "1e-6", "--out", tmp_path / "d.jsonl")
    assert nucleus == greedy  # only the most likely token is left to draw
    _, first = generations(cli, run, "--generate", "2", "--temperature", "2", "--seed", "1", "--out", tmp_path / "e")
    assert first == one[:2]  # a prompt's draw does not depend on how many prompts are answered


def test_top_p_keeps_the_most_likely_tokens_that_first_reach_p_in_their_proportions():
    logits = torch.tensor([0.5, 0.3, 0.2, 1e-9]).log()
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(logits, 1.0, 0.6, g) for _ in range(3000)]), minlength=4)
    assert counts[2] == counts[3] == 0 and counts[0] / counts[1] == pytest.approx(0.5 / 0.3, rel=0.12)
    assert {draw(logits, 1.0, 0.5, g) for _ in range(200)} == {0}  # the first token alone reaches 0.5
    assert len({draw(logits, 1.0, 1.0, g) for _ in range(400)}) == 3  # all of them (the 1e-9 one all but never)


def test_without_eos_a_response_runs_its_budget_on_the_validation_prompts(cli, tmp_path):
    spec = chars_spec(tmp_path, "noeos", eos=False, test_fraction=0)
    train_run(spec, tmp_path / "runs", ["train.epochs=2"])
    run = tmp_path / "runs" / "noeos"
    data, _ = trained_model(spec, run)
    summary, rows = generations(cli, run, "--generate", "3")
    prompts = split_rows(data.x_val, data.y_val, None)
    assert summary["split"] == "val" and summary["ended_with_eos"] is None
    assert [r["prompt"] for r in rows] == [decode_chars(p) for p, _ in prompts[:3]]
    assert [r["generated_tokens"] for r in rows] == [data.block_size - len(p) for p, _ in prompts[:3]]
    out = tmp_path / "five.jsonl"
    summary, rows = generations(cli, run, "--generate", "3", "--max-new-tokens", "5", "--out", out)
    assert summary["file"] == str(out) and [r["generated_tokens"] for r in rows] == [5, 5, 5]
    assert not any(r["ended_with_eos"] for r in rows)


def chat_examples(tmp_path):
    """An offline byte-level BPE tokenizer with a chat template (<|end|> its EOS), and chats."""
    return chat_files(tmp_path, EXAMPLES, " ".join(e["prompt"] + e["response"] for e in EXAMPLES), 80)


def test_an_hf_model_on_chat_messages_answers_after_the_generation_prompt_and_stops_at_the_eos(cli, tmp_path):
    tok = chat_examples(tmp_path)
    model = {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32,
                                      "resid_pdrop": 0, "embd_pdrop": 0, "attn_pdrop": 0}}
    spec = write_spec(tmp_path, {"name": "chat", "data": {"kind": "sft", "path": "chat.jsonl", "messages": "messages",
                                                          "tokenizer": "tok"}, "model": model, "device": "cpu",
                                 "train": {"epochs": 6, "batch_size": 8, "lr": 1e-2}})
    train_run(spec, tmp_path / "runs")
    run = tmp_path / "runs" / "chat"
    summary, rows = generations(cli, run, "--generate", "3")
    data, net = trained_model(spec, run)
    for row, (prompt, reference) in zip(rows, split_rows(data.x_test, data.y_test, tok.eos_token_id)):
        by_hand = greedy_by_hand(net, prompt, data.block_size - len(prompt), tok.eos_token_id)
        assert row["prompt"] == tok.decode(prompt) and row["prompt"].endswith("<|end|><|assistant|>")
        assert row["prompt"].startswith("<|user|>") and row["reference"] == tok.decode(reference)
        assert row["generated"] == tok.decode(by_hand) and row["generated_tokens"] == len(by_hand)
        assert row["ended_with_eos"] == (len(by_hand) < data.block_size - len(prompt))
    learned = [r for r in rows if r["prompt"] == "<|user|>hi?<|end|><|assistant|>"]
    assert summary["split"] == "test" and learned and all(r["exact_match"] and r["ended_with_eos"] for r in learned)
    assert summary["ended_with_eos"] == sum(r["ended_with_eos"] for r in rows)


def test_generation_mistakes_are_one_line_exit_2_and_write_nothing(cli, char_run, tmp_path):
    spec, run = char_run
    data, _ = trained_model(spec, run)
    tiny = write_spec(tmp_path, {"name": "tiny", **TINY})
    train_run(tiny, tmp_path / "runs")
    before = sorted(p.name for p in run.iterdir())
    cases = {
        ("--generate", "0"): "--generate: 0; give how many held-out prompts to answer, at least 1",
        ("--generate", "-2"): "--generate: -2; give how many held-out prompts to answer, at least 1",
        ("--temperature", "1"): "--temperature: only with --generate N (how many held-out prompts to answer)",
        ("--generate", "2", "--temperature", "-1"): "--temperature: -1; 0 (greedy, the default) or a number > 0 to "
                                                    "sample",
        ("--generate", "2", "--temperature", "nan"): "--temperature: nan; 0 (greedy, the default) or a number > 0 to "
                                                     "sample",
        ("--generate", "2", "--temperature", "1", "--top-p", "0"): "--top-p: 0; the share of probability the draw "
                                                                   "keeps, in (0, 1], e.g. 0.9",
        ("--generate", "2", "--temperature", "1", "--top-p", "1.5"): "--top-p: 1.5; the share of probability the "
                                                                     "draw keeps, in (0, 1], e.g. 0.9",
        ("--generate", "2", "--top-p", "0.9"): "--top-p: greedy decoding (temperature 0, the default) draws nothing; "
                                               "add --temperature T > 0 to sample",
        ("--generate", "2", "--max-new-tokens", "0"): "--max-new-tokens: 0; at least 1 (default: the data's "
                                                      "max_length minus each prompt)",
        ("--generate", "2", "--out", tmp_path / "no" / "g.jsonl"): f"--out: folder {tmp_path / 'no'} does not exist",
        ("--generate", "2", "--out", tmp_path): f"--out: {tmp_path} is a folder; name a file in it, e.g. "
                                                f"{tmp_path / 'generations.jsonl'}",
        ("--generate", "2", "--out", tiny / "g.jsonl"): f"--out: {tiny} is a file, not a folder",
    }
    for args, message in cases.items():
        code, out, err = cli("eval", run, *args)
        assert (code, out, err.strip()) == (2, "", f"error: {message}"), args
    code, out, err = cli("eval", run, "--generate", "x")  # click's own words, one line too
    assert (code, out, len(err.strip().splitlines())) == (2, "", 1) and err.startswith("error: invalid value for "
                                                                                       "'--generate': ")
    code, out, err = cli("eval", tmp_path / "runs" / "tiny", "--generate", "2")
    assert (code, out, err.strip()) == (2, "", "error: --generate: run 'tiny' trained on 'digits' data; generating "
                                               "responses needs instruction data (data.kind: sft), prompts with their "
                                               "responses")
    longest = max(len(p) for p, _ in split_rows(data.x_test[:2], data.y_test[:2], len(CHARS) + 1))
    code, out, err = cli("eval", run, "--generate", "2", "--max-new-tokens", str(data.block_size))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: --max-new-tokens: {data.block_size} new tokens after the {longest}-token prompt "
                          f"of example ") and err.strip().endswith(
        f"run past the model's context of {data.block_size} tokens; at most {data.block_size - longest} (prompts are "
        "never truncated)")
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "tiny" / "g.jsonl").exists()
    assert not list((tmp_path / "runs" / "tiny").glob("generations*"))
