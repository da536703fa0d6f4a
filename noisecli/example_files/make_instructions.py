"""Writes experiments/data/instructions.jsonl: 600 small instruction/response pairs of three
tasks (add two numbers, reverse a word, sort letters), prompts and responses of varied length,
so batches are really padded. Deterministic (seed 0); the file is committed, and this script
shows how it was made:

    python experiments/make_instructions.py
"""

import json
import random
from pathlib import Path

WORDS = ("noise signal weight token model layer batch epoch train value gradient sample tensor "
         "random matrix vector kernel loss seed scale").split()


def example(rng: random.Random) -> dict:
    task = rng.choice(["add", "reverse", "sort"])
    if task == "add":
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        return {"prompt": f"Add {a} and {b}.\n", "response": f"{a + b}"}
    word = " ".join(rng.sample(WORDS, rng.randint(1, 3)))
    if task == "reverse":
        return {"prompt": f"Reverse: {word}\n", "response": word[::-1]}
    return {"prompt": f"Sort the letters of: {word}\n", "response": "".join(sorted(word.replace(' ', '')))}


def main() -> None:
    rng = random.Random(0)
    rows = [example(rng) for _ in range(600)]
    out = Path(__file__).parent / "data" / "instructions.jsonl"
    out.parent.mkdir(exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} examples to {out}")


if __name__ == "__main__":
    main()
