"""Writes experiments/data/pydoc-tokenizer/: a 768-token byte-level BPE tokenizer, so that a `gpt`
pretrained on pydoc text and the same `gpt` instruction-tuned on data/instructions.jsonl read the
same token ids (character-level data builds each vocabulary from its own characters, and
model.init refuses weights whose embedding shapes differ). Trained offline with the `tokenizers`
library on CPython's bundled pydoc topics (what `data.kind: pydoc` reads) and the instruction
set's prompts and responses, so its merges fit both texts; byte-level, so any text encodes.
Two special tokens: <|pad|> (id 0, the padding of sft batches) and <|endoftext|> (id 1, the
EOS that ends each response and is scored). Saved as a transformers PreTrainedTokenizerFast
folder (what `data.tokenizer` loads, nothing downloaded). Deterministic for a given CPython
(its pydoc topics are the training text); the folder is committed, and this script shows how
it was made:

    python experiments/make_tokenizer.py
"""

import json
from pathlib import Path

VOCAB_SIZE = 768  # 256 bytes, 2 special tokens, 510 merges
PAD, EOS = "<|pad|>", "<|endoftext|>"


def texts(here: Path) -> list[str]:
    from pydoc_data.topics import topics  # ships inside CPython, as noisecli/data/text.py:load_pydoc reads it

    rows = [json.loads(line) for line in (here / "data" / "instructions.jsonl").read_text().splitlines()]
    return ["".join(topics[k] for k in sorted(topics)), *(r["prompt"] + r["response"] for r in rows)]


def main() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    here = Path(__file__).parent
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts(here), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, eos_token=EOS)
    out = here / "data" / "pydoc-tokenizer"
    tok.save_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    # transformers 5 writes its own class name (TokenizersBackend), which transformers 4 cannot
    # load; PreTrainedTokenizerFast is the same class to both (noisecli's hf extra: >= 4.46)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"wrote a {len(tok)}-token tokenizer to {out} (pad {tok.pad_token_id}, eos {tok.eos_token_id})")


if __name__ == "__main__":
    main()
