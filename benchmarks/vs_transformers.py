"""noisecli's step against transformers' Trainer and a hand-written PyTorch loop, NEFTune on, same process.

    python benchmarks/vs_transformers.py                    # tiny Llama, batch 8 x 64 tokens, CPU, one thread
    python benchmarks/vs_transformers.py --batch-size 32 --seq-len 128
    python benchmarks/vs_transformers.py --device cuda      # where there is a GPU
    python benchmarks/vs_transformers.py --profile 20       # also: where noisecli's steps spend their time

The same random-init Llama (built from a LlamaConfig by noisecli's `model.kind: hf`; the other
two are deep copies of it, so all three start from the same weights) trains on the same data
with the same batch size, AdamW (lr, betas, eps, weight decay; decay on matrices and
embeddings, not on the norms), clipping at 1.0, fp32, constant lr, and NEFTune at alpha 5:

- noisecli: a `Trainer` built from the spec (`noise: {kind: embedding, factor: 5}`), driven by
  its own loop (`engine.loop.train_until_done`, what `noisecli train` runs between
  evaluations; none falls in the timed steps).
- transformers: the real `Trainer` with `neftune_noise_alpha=5`, one `trainer.train()` over
  every step; a callback at the end of each round (`on_step_end`) runs the other two's rounds,
  so the Trainer's whole loop (its DataLoader and collator, callbacks, clipping, optimizer,
  scheduler) is inside its timed rounds and its setup is not. Its optimizer is the Trainer's
  default (`--hf-optim` to change it); logging, saving and evaluation are off.
- plain: a hand-written loop on the same tensors: index a batch, forward, cross-entropy,
  backward, clip_grad_norm_, AdamW (fused, as noisecli's, and its groups), zero_grad, and NEFTune as a
  forward hook on the input embeddings written out here.

The data is instruction-style: fixed prompt/response pairs of random characters (a vocabulary
of 256 ids), tokenized by noisecli's `data.kind: sft` (characters, an EOS at the end), every
example exactly --seq-len tokens, so no batch holds padding: the Trainer then sees exactly
noisecli's ids (`input_ids`) and its targets as labels (-100 on the prompt), the loss is the
same mean over the response tokens, and NEFTune's alpha / sqrt(L d) has the same L on all
three (noisecli's default `length: example` and transformers' padded length agree without
padding). The Trainer's dataset is a torch Dataset of those tensors (the collator stacks
them: the cheapest input a Trainer can have). The Llama's KV cache is off on all three
(noisecli's forward asks for none; transformers' config default would build one in training).

Rounds alternate (transformers, noisecli, plain, transformers, ...) after a warm-up round of
each; each round's CPU time (time.process_time) and wall-clock (perf_counter) per step are
recorded and the medians reported, with the ratios of the medians against the goals (noisecli
<= 0.9x transformers' CPU time per step, <= 1.03x the plain loop's). It reports; it does not
assert timings. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from torch.nn import functional as F

from noisecli.data import IGNORE
from noisecli.engine.loop import train_until_done
from noisecli.engine.optim import loss_fn
from noisecli.spec import spec_from_dict
from noisecli.trainer import Trainer

VOCAB = 256  # token ids: padding (never used), 254 characters, the EOS
STEPS_PER_EPOCH = 32  # training examples = this x the batch size: every batch full
ALPHA = 5.0
OPTIM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
GOALS = {"transformers": 0.9, "plain": 1.03}  # noisecli's CPU time per step over theirs, at most


def llama_config(seq_len: int) -> dict:
    return {"model_type": "llama", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": seq_len}


def write_pairs(path: Path, n: int, seq_len: int) -> None:
    """n prompt/response pairs of random characters, each seq_len tokens with its EOS."""
    rng = random.Random(0)
    alphabet = [chr(0x100 + i) for i in range(VOCAB - 2)]
    prompt = seq_len // 2
    response = seq_len - prompt - 1
    with path.open("w") as f:
        for i in range(n):
            text = "".join(alphabet[i % len(alphabet)] if j == 0 else rng.choice(alphabet)
                           for j in range(prompt + response))  # the first rows hold every character
            f.write(json.dumps({"prompt": text[:prompt], "response": text[prompt:]}) + "\n")


def noisecli_trainer(folder: Path, args) -> Trainer:
    n_train = STEPS_PER_EPOCH * args.batch_size
    write_pairs(folder / "pairs.jsonl", int(n_train / 0.8) + 8, args.seq_len)
    raw = {"name": "bench", "device": args.device, "seed": 0,
           "data": {"kind": "sft", "path": str(folder / "pairs.jsonl"), "test_fraction": 0, "val_fraction": 0.2,
                    "train_size": n_train},
           "model": {"kind": "hf", "config": llama_config(args.seq_len)},
           "noise": {"kind": "embedding", "factor": ALPHA},
           "train": {"batch_size": args.batch_size, "lr": OPTIM["lr"], "betas": list(OPTIM["betas"]),
                     "weight_decay": OPTIM["weight_decay"], "grad_clip": 1.0, "precision": "fp32",
                     "lr_schedule": "constant", "max_steps": 10**9, "eval_every": 10**9}}
    trainer = Trainer(spec_from_dict(raw), folder / "runs-never-written", quiet=True).setup()
    ds = trainer.data
    if ds.x_train.shape != (n_train, args.seq_len) or (ds.x_train == ds.pad_id).any() or ds.n_outputs != VOCAB:
        sys.exit(f"the data is not {n_train} unpadded examples of {args.seq_len} tokens over {VOCAB} ids")
    return trainer


class NoisecliRunner:
    """noisecli's own loop, stopped after each round's steps (as a stop request stops it)."""

    name = "noisecli"

    def __init__(self, trainer: Trainer, device: torch.device):
        self.trainer, self.device = trainer, device
        for noise in trainer.noises:
            noise.attach(trainer.raw_model)
        trainer.model.train()
        self.bars = contextlib.ExitStack()
        trainer.bar = self.bars.enter_context(trainer.display.progress(trainer.total_steps, 0, "bench"))

    def run(self, steps: int) -> None:
        left = [steps]

        def stop() -> bool:
            left[0] -= 1
            return left[0] < 0

        train_until_done(self.trainer, stop)


class PlainRunner:
    """The loop by hand: the same model, data, optimizer groups and NEFTune hook."""

    name = "plain"

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device):
        self.model, self.x, self.y, self.batch_size = model.to(device), x, y, batch_size
        params = [p for p in model.parameters() if p.requires_grad]
        fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}  # noisecli's choice
        self.params = params
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in params if p.dim() >= 2], "weight_decay": OPTIM["weight_decay"]},
             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=OPTIM["lr"], betas=OPTIM["betas"], eps=OPTIM["eps"], **fast)
        self.generator = torch.Generator(device=device).manual_seed(1)
        self.perm, self.pos = None, 0
        model.get_input_embeddings().register_forward_hook(self.neftune)
        model.train()

    def neftune(self, module, inputs, output):
        if not module.training:
            return None
        scale = ALPHA / math.sqrt(output.shape[1] * output.shape[2])
        return output + torch.empty_like(output).uniform_(-scale, scale, generator=self.generator)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            if self.perm is None or self.pos >= len(self.perm):
                self.perm, self.pos = torch.randperm(len(self.x), generator=self.generator, device=self.x.device), 0
            idx = self.perm[self.pos: self.pos + self.batch_size]
            self.pos += self.batch_size
            x, y = self.x[idx], self.y[idx]
            logits = self.model(input_ids=x, use_cache=False).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


class Rows(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, labels: torch.Tensor):
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.labels[i]}


class Rounds(transformers.TrainerCallback):
    """At the Trainer's step ends: after its warm-up round, warm the others up; after each of
    its timed rounds, record it and run the others' rounds; the Trainer's next round starts
    when this returns."""

    def __init__(self, others: list, steps: int, device: torch.device):
        self.others, self.steps, self.device = others, steps, device
        self.times: dict[str, list[tuple[float, float]]] = {"transformers": [], **{o.name: [] for o in others}}
        self.start: tuple[float, float] | None = None

    def clocks(self) -> tuple[float, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time(), time.perf_counter()

    def per_step(self, start: tuple[float, float]) -> tuple[float, float]:
        cpu, wall = self.clocks()
        return (cpu - start[0]) / self.steps, (wall - start[1]) / self.steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps:
            return
        if self.start is None:  # the Trainer's warm-up round is done (its setup with it)
            for other in self.others:
                other.run(self.steps)
        else:
            self.times["transformers"].append(self.per_step(self.start))
            for other in self.others:
                start = self.clocks()
                other.run(self.steps)
                self.times[other.name].append(self.per_step(start))
        self.start = self.clocks()


def hf_trainer(model, x, y, args, folder: Path, callback: Rounds) -> transformers.Trainer:
    labels = torch.cat([torch.full_like(y[:, :1], IGNORE), y[:, :-1]], 1)  # TRL's labels: the targets unshifted
    extra = {"optim": args.hf_optim} if args.hf_optim else {}
    targs = transformers.TrainingArguments(
        output_dir=str(folder / "hf"), max_steps=(args.rounds + 1) * args.steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        learning_rate=OPTIM["lr"], adam_beta1=OPTIM["betas"][0], adam_beta2=OPTIM["betas"][1],
        adam_epsilon=OPTIM["eps"], weight_decay=OPTIM["weight_decay"], max_grad_norm=1.0,
        lr_scheduler_type="constant", warmup_steps=0, neftune_noise_alpha=ALPHA, bf16=False, fp16=False,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=args.device == "cpu", dataloader_num_workers=0, seed=0, **extra)
    return transformers.Trainer(model=model, args=targs, train_dataset=Rows(x.cpu(), labels.cpu()),
                                callbacks=[callback])


def same_setup(trainer: Trainer, hf: torch.nn.Module, plain: torch.nn.Module, hf_trainer_) -> list[str]:
    """What shows the three train the same thing: one batch's loss at the start (no noise), the
    weight-decay groups, the optimizers."""
    x, y = trainer.data.x_train[:8], trainer.data.y_train[:8]
    labels = torch.cat([torch.full_like(y[:, :1], IGNORE), y[:, :-1]], 1)
    models = (trainer.raw_model, hf, plain)
    for m in models:
        m.eval()
    with torch.no_grad():
        ours = loss_fn(trainer.raw_model(x), y, "sft").item()
        theirs = hf(input_ids=x, labels=labels).loss.item()
        logits = plain(input_ids=x, use_cache=False).logits
        mine = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    for m in models:
        m.train()
    names = {id(p): n for n, p in trainer.raw_model.model.named_parameters()}
    ours_decay = {names[id(p)] for p in trainer.optimizer.param_groups[0]["params"]}
    theirs_decay = set(hf_trainer_.get_decay_parameter_names(hf))
    optim = trainer.optimizer.defaults
    kernel = "fused" if optim.get("fused") else "foreach" if optim.get("foreach") else "for-loop"
    return [f"the same at the start: one batch's loss {ours:.6f} (noisecli), {theirs:.6f} (transformers), "
            f"{mine:.6f} (plain); weight decay on the same {len(ours_decay)} tensors: "
            f"{'yes' if ours_decay == theirs_decay else 'NO: ' + str(sorted(ours_decay ^ theirs_decay))}",
            f"optimizers: noisecli AdamW {kernel}, plain AdamW {kernel}, transformers "
            f"{hf_trainer_.args.optim.value} "
            f"({type(hf_trainer_.optimizer).__name__ if hf_trainer_.optimizer else '?'})"]


def profile(runner, steps: int, rows: int = 25) -> None:
    """torch.profiler's table of `steps` of this runner's steps, by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.run(steps)
    print(f"\n{runner.name}: {steps} steps under torch.profiler, by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="steps per round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of each; the medians are reported")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64, help="tokens per example (every example this long)")
    ap.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hf-optim", help="the Trainer's `optim` (default: its own default)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile N steps of noisecli and of the plain loop")
    args = ap.parse_args()
    if args.seq_len < 3:
        sys.exit("--seq-len: at least 3 (a prompt, a response and the EOS)")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trainer = noisecli_trainer(tmp, args)
        base = trainer.raw_model.model  # before any hook is attached: the copies carry none
        hf, plain_model = copy.deepcopy(base), copy.deepcopy(base)
        hf.config.use_cache = False
        x, y = trainer.data.x_train, trainer.data.y_train
        ours = NoisecliRunner(trainer, device)
        plain = PlainRunner(plain_model, x, y, args.batch_size, device)
        callback = Rounds([ours, plain], args.steps, device)
        hft = hf_trainer(hf, x, y, args, tmp, callback)
        hft.create_optimizer()  # the one train() would build (it keeps one that exists)
        checks = same_setup(trainer, hf, plain_model, hft)  # in eval mode: no noise
        hft.train()
        times = callback.times

        n_params = sum(p.numel() for p in trainer.params)
        print(f"tiny Llama (2 layers, 64 wide, vocab {VOCAB}, {n_params:,} parameters), batch {args.batch_size} x "
              f"{args.seq_len} tokens, NEFTune alpha {ALPHA:g}, fp32, AdamW lr {OPTIM['lr']:g} betas "
              f"{OPTIM['betas'][0]:g}/{OPTIM['betas'][1]:g} wd {OPTIM['weight_decay']:g}, clip 1.0; {device}, "
              f"{torch.get_num_threads()} thread(s); {args.rounds} rounds x {args.steps} steps after a warm-up round; "
              f"torch {torch.__version__}, transformers {transformers.__version__}")
        for line in checks:
            print(line)
        print("| runner | CPU ms/step | wall ms/step | steps/s (CPU) | steps/s (wall) |")
        print("| --- | --- | --- | --- | --- |")
        med = {}
        for name in ("transformers", "noisecli", "plain"):
            cpu = statistics.median(t[0] for t in times[name])
            wall = statistics.median(t[1] for t in times[name])
            med[name] = (cpu, wall)
            label = {"transformers": "transformers Trainer", "plain": "plain PyTorch loop"}.get(name, name)
            print(f"| {label} | {cpu * 1e3:.2f} | {wall * 1e3:.2f} | {1 / cpu:.1f} | {1 / wall:.1f} |")
        print()
        print("| noisecli against | CPU ratio | wall ratio | rounds' CPU ratios | goal (CPU) | |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, goal in GOALS.items():
            cpu, wall = (med["noisecli"][i] / med[name][i] for i in (0, 1))
            rounds = [a[0] / b[0] for a, b in zip(times["noisecli"], times[name])]
            verdict = "met" if cpu <= goal else f"missed by {(cpu / goal - 1) * 100:.1f} %"
            print(f"| {name} | {cpu:.3f} | {wall:.3f} | {min(rounds):.3f}-{max(rounds):.3f} | <= {goal:g} | "
                  f"{verdict} |")
        if args.profile:
            profile(ours, args.profile)
            profile(plain, args.profile)


if __name__ == "__main__":
    main()
