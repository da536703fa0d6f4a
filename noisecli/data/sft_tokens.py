"""`data.kind: sft`, its tokens: each example as token ids and the tokens the loss scores.

Checked against TRL's SFTTrainer (tests/test_sft_trl.py), whose data processing is the
reference here:

- prompt/response text (`data.eos`, `data.bos`, `data.tokenize`): with `joint` (the default)
  the whole text, prompt + response + EOS, is tokenized at once and the response starts where
  the prompt's own tokens stop matching it (TRL's prompt-completion: `common_prefix_length`);
  with `separate` the two are tokenized apart and joined, so the prompt's tokens are those
  generation starts from. The BOS is whatever the tokenizer puts before a text.
- chat messages (`data.loss_on`): `last` scores what follows the conversation before the last
  assistant message rendered with the generation prompt (TRL's conversational prompt-completion);
  `assistant` scores every assistant turn, found the same way turn by turn, or, with
  `{% generation %}` tags in the template, exactly the tagged tokens (TRL's
  `assistant_only_loss`, transformers' `return_assistant_tokens_mask`); `all` every token.

Characters: id 0 is padding, 1..n the characters in sorted order, n + 1 the end of sequence
(with `data.eos`): a reserved id no text can produce, so padding stays id 0 and a character's
id does not depend on whether EOS is on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from noisecli.errors import SpecError
from noisecli.spec import DataSpec

# the pattern transformers looks for before it makes an assistant mask (apply_chat_template)
GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class Encoded:
    ids: list[int]
    scored: list[bool]  # scored[t]: token t is a target (predicted at position t - 1)

    @classmethod
    def split(cls, ids: list[int], start: int) -> "Encoded":
        """Tokens from `start` on are scored (the response, its EOS included)."""
        return cls(ids, [t >= start for t in range(len(ids))])


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share (TRL's `common_prefix_length`)."""
    n = 0
    for s, t in zip(a, b):
        if s != t:
            break
        n += 1
    return n


class Characters:
    """One id per character; no BOS, no chat template."""

    def __init__(self, spec: DataSpec, texts: list[str]):
        chars = sorted(set().union(*map(set, texts)))
        self.stoi = {c: i + 1 for i, c in enumerate(chars)}  # id 0 is padding
        self.pad = 0
        self.eos = len(chars) + 1 if spec.eos else None
        self.vocab = len(chars) + 1 + (self.eos is not None)
        self.note = {"vocab": "characters, 0 = padding" + (f", {self.eos} = end of sequence" if spec.eos else "")}

    def encode(self, item, where: str) -> Encoded:
        prompt, completion = item
        ids = [self.stoi[c] for c in prompt + completion] + ([self.eos] if self.eos is not None else [])
        return Encoded.split(ids, len(prompt))  # one token per character: joint and separate agree


class Tokenizer:
    """A Hugging Face tokenizer: text as it tokenizes it, conversations through its chat template."""

    def __init__(self, spec: DataSpec, tok, chats: bool):
        self.spec, self.tok, self.name = spec, tok, spec.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self.pad is None:
            raise SpecError(f"data.tokenizer: {self.name} has neither a pad nor an end-of-sequence token to pad with")
        template = getattr(tok, "chat_template", None)
        if chats and not template:
            key = "data.messages" if spec.messages else "data.template"
            raise SpecError(f"{key}: the tokenizer {self.name} has no chat template")
        if spec.eos and not chats and tok.eos_token_id is None:
            raise SpecError(f"data.eos: the tokenizer {self.name} has no end-of-sequence token to end responses "
                            "with; set data.eos: false, or use a tokenizer with one")
        self.eos = tok.eos_token_id
        self.head = _prefix(tok) if spec.bos else []
        self.tags = bool(template) and GENERATION.search(template) is not None
        self.vocab, self.note = len(tok), {"tokenizer": self.name}

    def encode(self, item, where: str) -> Encoded:
        return self.chat(item, where) if isinstance(item, list) else self.pair(*item)

    def text(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def pair(self, prompt: str, completion: str) -> Encoded:
        eos = self.spec.eos
        prompt_ids = self.head + self.text(prompt)
        if self.spec.tokenize == "separate":
            response = self.text(completion)
            if eos and response[-1:] != [self.eos]:
                response.append(self.eos)
            return Encoded.split(prompt_ids + response, len(prompt_ids))
        if eos and not completion.endswith(self.tok.eos_token):  # TRL appends the EOS text, once
            completion += self.tok.eos_token
        whole = self.head + self.text(prompt + completion)
        return Encoded.split(whole, common_prefix(prompt_ids, whole))

    def render(self, messages: list, where: str, generation: bool = False) -> list[int]:
        try:
            return _ids(self.tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation))
        except Exception as e:  # noqa: BLE001 - the template is the user's (jinja errors, missing roles)
            raise SpecError(f"data.messages: {where}: {self.name}'s chat template failed "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None

    def chat(self, messages: list, where: str) -> Encoded:
        if self.spec.loss_on == "assistant" and self.tags:
            return self.tagged(messages, where)
        whole = self.render(messages, where)
        turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
        turns = turns[-1:] if self.spec.loss_on == "last" else turns
        scored = [False] * len(whole)
        for k in turns if self.spec.loss_on != "all" else ():
            before = self.render(messages[:k], where, generation=True)
            through = whole if k == len(messages) - 1 else self.render(messages[:k + 1], where)
            if whole[:len(before)] != before or whole[:len(through)] != through:
                raise SpecError(f"data.messages: {where}: with {self.name}'s chat template, the conversation before "
                                "an assistant message is not a prefix of the rendered conversation, so that message "
                                "cannot be told apart (with data.loss_on: assistant, {% generation %} tags in the "
                                "template mark the assistant tokens instead)")
            scored[len(before):len(through)] = [True] * (len(through) - len(before))
        return Encoded(whole, scored)

    def tagged(self, messages: list, where: str) -> Encoded:
        """Exactly the tokens the template's {% generation %} tags mark, as TRL's assistant_only_loss."""
        try:
            out = self.tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                               return_assistant_tokens_mask=True)
        except Exception as e:  # noqa: BLE001 - e.g. a slow tokenizer, which has no character offsets
            raise SpecError(f"data.loss_on: {where}: {self.name} cannot mark the tokens of its {{% generation %}} "
                            f"tags ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        if 1 not in mask:
            raise SpecError(f"data.loss_on: {where}: the {{% generation %}} tags of {self.name}'s chat template mark "
                            "none of its tokens; check the template, or use data.loss_on: last")
        return Encoded(ids, [bool(m) for m in mask])


def encoder(spec: DataSpec, items: dict[str, list]):
    """The encoder for the spec: characters (their vocabulary from every text) or a tokenizer."""
    chats = any(isinstance(item, list) for split in items.values() for item in split)
    if spec.tokenizer is None:
        return Characters(spec, [t for split in items.values() for item in split for t in item])
    from noisecli.hub import import_transformers, load_local  # lazy: only Hugging Face tokenizers need it

    transformers = import_transformers("data.tokenizer")
    # a tokenizer's own code never runs (as for text data, see text.encode)
    tok = load_local(transformers.AutoTokenizer, spec.tokenizer, "data.tokenizer", trust_remote_code=False)
    return Tokenizer(spec, tok, chats)


def _prefix(tok) -> list[int]:
    """The ids the tokenizer puts before a text when it adds its special tokens (its BOS, or none)."""
    plain = tok("x", add_special_tokens=False)["input_ids"]
    full = tok("x")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i])
    return []


def _ids(out) -> list[int]:
    """apply_chat_template gives a list of ids, or (in newer transformers) a mapping with input_ids."""
    return list(out["input_ids"] if hasattr(out, "keys") else out)
