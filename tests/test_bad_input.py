"""A corpus of wrong inputs: each gets exit 2, one `error:` line per problem naming the key,
no traceback, and nothing created under the runs folder."""

import pytest

from tests.conftest import TINY

GPT = {"data": {"kind": "pydoc"}, "model": {"kind": "gpt"}}
SWEEP = {"base": TINY, "grid": {"noise.factor": [0.1]}}
GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}
HF = {"data": {"kind": "markov", "block_size": 16, "n_tokens": 2000}, "model": {"kind": "hf", "config": GPT2}}
# billion laughs: nine anchors, each ten of the one before, under a typed key (10**9 values once expanded)
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + \
    "data: {kind: digits}\nmodel: {kind: mlp, hidden: *i}\n"

# (command, spec written to spec.yaml or None, extra arguments, expected text in stderr)
CASES = [
    # unknown keys and kinds
    ("train", {**TINY, "trian": {}}, [], "error: trian: unknown key; did you mean 'train'?"),
    ("train", {**TINY, "train": {"lrr": 1}}, [], "error: train.lrr: unknown key; did you mean 'lr'?"),
    ("train", {**TINY, "data": {"kind": "digits", "val_frac": 0.1}}, [], "data.val_frac: unknown key; did you mean 'val_fraction'?"),
    ("train", {**TINY, "data": {"kind": "digits", "block_size": 8}}, [], "data.block_size: does not apply to data kind 'digits'"),
    ("train", {**TINY, "model": {"kind": "mlpp"}}, [], "model.kind: unknown model 'mlpp'; did you mean 'mlp'?"),
    ("train", {**TINY, "data": {"kind": "digit"}}, [], "data.kind: unknown dataset 'digit'; did you mean 'digits'?"),
    ("train", {**TINY, "noise": {"kind": "wieght"}}, [], "noise.kind: unknown noise kind 'wieght'; did you mean 'weight'?"),
    ("train", {**TINY, "noise": {"kind": "input", "gamma": 1}}, [], "noise.gamma: does not apply to noise kind 'input'"),
    ("train", {**TINY, "output": {"checkpoint": "bestt"}}, [], "error: output.checkpoint: must be one of last, best, every, none; got 'bestt'; did you mean 'best'?"),
    ("sweep", {"base": "nothere.yaml", "grid": {"noise.factor": [0.1]}}, [], "error: base: file not found: nothere.yaml"),
    ("train", TINY, ["lr=1e-3"], "error: lr: unknown key; did you mean 'train.lr'?"),
    ("train", TINY, ["noise.factor=yes"], "error: noise.factor: must be a number, got 'yes' (str)"),
    ("train", TINY, ["output.tracker=tensorbord"], "error: output.tracker: must be one of none, tensorboard, wandb, mlflow; got 'tensorbord'; did you mean 'tensorboard'?"),
    ("train", {**TINY, "data": {"kind": "sft", "path": "afile", "promt": "q"}}, [], "error: data.promt: unknown key; did you mean 'prompt'?"),
    ("train", {**TINY, "model": {"kind": "python", "target": "nofile.py:f"}}, [], "error: model.target: file not found:"),
    # values out of range
    ("train", {**TINY, "train": {"lr": -1}}, [], "error: train.lr: must be > 0, got -1.0"),
    ("train", {**TINY, "data": {"kind": "digits", "val_fraction": 1.0}}, [], "data.val_fraction: must be < 1, got 1.0"),
    ("train", {**TINY, "train": {"epochs": 0}}, [], "train.epochs: must be >= 1, got 0"),
    ("train", {**TINY, "noise": {"kind": "input", "factor": -0.1}}, [], "noise.factor: must be >= 0, got -0.1"),
    ("train", {**GPT, "noise": {"kind": "token", "factor": 1.5}}, [], "noise.factor: token noise replaces each token"),
    ("train", {**TINY, "train": {"precision": "bf61"}}, [], "train.precision: must be one of auto, fp32, bf16, fp16; got 'bf61'; did you mean 'bf16'?"),
    ("train", {**TINY, "device": "gpu"}, [], "device: must be auto, cpu, cuda, cuda:N or mps; got 'gpu'"),
    ("train", {**TINY, "train": {"betas": [0.9]}}, [], "train.betas: must be two numbers in [0, 1)"),
    ("train", {**TINY, "train": {"lr": 1e-3, "min_lr": 1e-2, "lr_schedule": "cosine"}}, [], "train.min_lr: 0.01 is above train.lr"),
    ("train", {**GPT, "model": {"kind": "gpt", "n_embd": 30}}, [], "model.n_embd: 30 must be a multiple of model.n_head (4)"),
    ("train", {**TINY, "data": {"kind": "digits", "train_size": 100000}}, [], "data.train_size: 100000 is more than the 1078"),
    # wrong types
    ("train", {**TINY, "train": {"lr": "fast"}}, [], "train.lr: must be a number, got 'fast' (str)"),
    ("train", {**TINY, "train": {"epochs": 2.5}}, [], "train.epochs: must be an integer, got 2.5 (float)"),
    ("train", {**TINY, "train": {"compile": "yes"}}, [], "train.compile: must be true or false, got 'yes' (str)"),
    ("train", {**TINY, "model": {"kind": "mlp", "hidden": ["a"]}}, [], "model.hidden.0: must be an integer"),
    ("train", {**TINY, "train": "fast"}, [], "train: must be a mapping of keys, got 'fast' (str)"),
    ("train", {**TINY, "noise": []}, [], "noise: an empty list; write `kind: none` for no noise"),
    # YAML itself
    ("train", "data:\n  kind: digits\n train: [1\n", [], "spec.yaml:3:"),
    ("train", "# only a comment\n", [], "the file is empty"),
    ("train", "- 1\n- 2\n", [], "expected a mapping of keys"),
    ("train", "name: !!python/object/apply:os.system ['true']\n", [], "bad YAML"),
    # overrides
    ("train", TINY, ["noise.factor"], "override 'noise.factor': must be in the form key=value"),
    ("train", {**TINY, "seed": 3}, ["seed.x=1"], "override 'seed.x=1': seed is not a section"),
    ("train", TINY, ["train.epoch=3"], "train.epoch: unknown key; did you mean 'epochs'?"),
    ("train", {**TINY, "noise": [{"kind": "input"}, {"kind": "weight"}]}, ["noise.factor=0.1"], "noise is a list of 2"),
    ("train", TINY, ["train.lr=abc"], "train.lr: must be a number, got 'abc' (str)"),
    # paths and names
    ("train", None, [], "missing.yaml: file not found"),
    ("train", {**GPT, "data": {"kind": "text", "path": "nope.txt"}}, [], "data.path: file not found:"),
    ("train", {**TINY, "data": {"kind": "npz"}}, [], "data.path: required for data kind 'npz'"),
    ("train", {**TINY, "name": "../escape"}, [], "name: '../escape' must be 1-100 letters"),
    ("train", TINY, ["--runs-dir", "afile/runs"], "--runs-dir: cannot create"),
    ("train", {**GPT, "noise": {"kind": "input"}}, [], "noise.kind: 'input' adds Gaussian noise to continuous inputs"),
    ("train", {**TINY, "data": {"kind": "wine"}, "model": {"kind": "cnn"}}, [], "model.kind: 'cnn' cannot read data kind 'wine'"),
    ("validate", {**TINY, "train": {"lr": "x"}}, [], "train.lr: must be a number"),
    # transformers models (the last four are found when the model is built, before anything is written)
    ("train", {**HF, "model": {"kind": "hf"}}, [], "model.path: model kind 'hf' needs model.path"),
    ("train", {**HF, "model": {"kind": "hf", "config": {"n_layer": 1}}}, [], "model.config.model_type: required"),
    ("train", {**HF, "model": {"kind": "hf", "path": "./not-here"}}, [], "model.path: folder not found:"),
    ("train", {**HF, "model": {"kind": "hf", "config": GPT2, "dropout": 1.5}}, [], "model.dropout: must be < 1, got 1.5"),
    ("train", {**TINY, "data": {"kind": "digits", "tokenizer": "gpt2"}}, [], "data.tokenizer: does not apply to data kind 'digits'"),
    ("train", {**HF, "data": {"kind": "pydoc"}, "model": {"kind": "hf", "path": "emptydir"}}, [], "data.tokenizer: a pretrained model reads"),
    ("train", {**HF, "data": {"kind": "hf"}}, [], "data.path: required for data kind 'hf'"),
    ("train", {**HF, "data": {"kind": "hf", "path": "afile"}}, [], "data.path: folder not found:"),
    ("train", HF, ["model.config.n_layers=2"], "model.config.n_layers: not a key of the gpt2 config; did you mean 'n_layer'?"),
    ("train", HF, ["model.config.model_type=gtp2"], "model.config.model_type: unknown 'gtp2'; did you mean 'gpt2'?"),
    ("validate", HF, ["model.config.n_layers=2"], "model.config.n_layers: not a key of the gpt2 config"),
    ("sweep", {"base": HF, "grid": {"model.config.n_layr": [1, 2]}}, [], "model.config.n_layr: not a key of the gpt2"),
    ("train", HF, ["model.config.n_layer=two"], "model.config.n_layer: Field 'n_layer' expected int, got str"),
    ("train", HF, ["model.config.n_embd=15"], "model.config: transformers cannot build this gpt2: `embed_dim` must be divisible"),
    ("train", HF, ["model.config={model_type: t5}"], "model.config.model_type: 't5' has no causal language model"),
    ("train", HF, ["model.config.n_positions=8"], "data.block_size: 16 is longer than the model's context (8)"),
    ("train", {**HF, "model": {"kind": "hf", "path": "nobody/no-such-model"}}, [], "not in the local Hugging Face cache"),
    # sweeps
    ("sweep", {**SWEEP, "grid": {"noise.factor": 0.1}}, [], "grid.noise.factor: must be a non-empty list of values"),
    ("sweep", {**SWEEP, "grdi": {}}, [], "grdi: unknown sweep key; did you mean 'grid'?"),
    ("sweep", {**SWEEP, "seeds": 0}, [], "seeds: a count of seeds must be >= 1, got 0"),
    ("sweep", SWEEP, ["--shard", "5/3"], "--shard: must be K/N with 1 <= K <= N"),
    ("sweep", SWEEP, ["--grid", "noise.factor"], "--grid 'noise.factor': must be KEY=V1,V2"),
    ("sweep", SWEEP, ["--devices", "gpu0"], "--devices: 'gpu0' is not cpu, cuda, cuda:N or mps"),
    ("sweep", {**SWEEP, "grid": {"noise.kind": ["input", "tokn"]}}, [], "grid point noise.kind=tokn: noise.kind: unknown noise kind 'tokn'"),
    ("sweep", TINY, ["--seeds", "x"], "--seeds: must be a count or a list of integers"),
    # input that recursed, filled memory or named odd folders (issue 19); FIFOs and devices: test_defects_spec.py
    ("train", "data: {kind: digits}\nmodel: " + "[" * 3000 + "]" * 3000 + "\n", [], "spec.yaml:2:57: bad YAML: nested more than 50 levels deep"),
    ("train", TINY, ["model.hidden=" + "[" * 3000 + "]" * 3000], "cannot read the value: nested more than 50 levels deep"),
    ("validate", LAUGHS, [], "bad YAML: more than 100,000 values once its aliases (*name) are expanded"),
    ("train", "data: {kind: digits}\ntrain:\n  lr: 0.1\n  lr: 0.2\n", [], "spec.yaml:4:3: bad YAML: key 'lr' appears twice (first on line 3)"),
    ("sweep", "base: {data: {kind: digits}}\ngrid: {noise.factor: [0.1]}\ngrid: {noise.factor: [0.2]}\n", [], "key 'grid' appears twice"),
    ("validate", {**TINY, "seed": 1e30}, [], "error: seed: must be <= 4294967295, got 1000000000000000019884624838656"),
    ("train", {**TINY, "data": {"kind": "digits", "seed": -1}}, [], "error: data.seed: must be >= 0, got -1"),
    ("train", TINY, ["train.epochs=1e30"], "error: train.epochs: 1e+30 is too large for any setting"),
    ("validate", {**TINY, "model": {"kind": "mlp", "hidden": [32, 0]}}, [], "error: model.hidden: must be >= 1, got 0"),
    ("validate", {**TINY, "model": {"kind": "cnn", "channels": [-4]}}, [], "error: model.channels: must be >= 1, got -4"),
    ("train", {**GPT, "train": {"batch_size": 10**9}}, [], "error: train.batch_size: 1,000,000,000 is more than the"),
    ("train", {**GPT, "train": {"eval_batches": 10**9}}, [], "error: train.eval_batches: 1,000,000,000 batches of 32 windows is more than the"),
    ("validate", {**TINY, "name": None}, [], "error: name: empty; give the run a name"),
    ("train", TINY, ["name="], "error: name: empty; give the run a name"),
    ("validate", {**TINY, "name": "run\n"}, [], "error: name: 'run\\n' must be 1-100 letters"),
    ("validate", {**TINY, "name": "a\tb"}, [], "error: name: 'a\\tb' must be 1-100 letters"),
    ("train", {**TINY, "device": "cpu\n"}, [], "error: device: must be auto, cpu, cuda, cuda:N or mps; got 'cpu\\n'"),
    ("sweep", {"base": TINY, "grid": {1: [1, 2]}}, [], "error: grid.1: a grid key must be a dotted spec key such as noise.factor, got 1 (int)"),
    ("validate", {**SWEEP, "name": "s\n"}, [], "error: name: 's\\n' must be 1-100 letters"),
    ("sweep", {**SWEEP, "seeds": 10**12}, [], "error: seeds: a count of seeds must be at most 100,000, got 1000000000000"),
    ("sweep", {**SWEEP, "seeds": [0, 2**40]}, [], "error: seeds: a seed must be from 0 to 4294967295, got 1099511627776"),
    # report
    ("report", None, ["missing-dir"], "report: missing-dir: no such folder"),
    ("report", None, ["emptydir"], "report: emptydir: no run folders"),
    ("report", None, ["emptydir", "-o", "nowhere/r.md"], "--output: folder nowhere does not exist"),
]


@pytest.mark.parametrize("command,spec,args,expected", CASES, ids=[f"{i:02d}-{c[3][:40]}" for i, c in enumerate(CASES)])
def test_bad_input(cli, tmp_path, monkeypatch, command, spec, args, expected):
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "emptydir").mkdir()
    target = []
    if command != "report":
        path = tmp_path / ("missing.yaml" if spec is None else "spec.yaml")
        if spec is not None:
            path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        target = [path.name]
    code, out, err = cli(command, *target, *args, *([] if "--runs-dir" in args or command in ("report", "validate")
                                                   else ["--runs-dir", "runs"]))
    assert code == 2, (out, err)
    assert expected in err
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("error: ") for line in lines), err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "afile").is_dir()


def test_the_corpus_reaches_every_command_and_every_spec_section():
    """What the corpus must cover, rather than how long it is: each command that reads input,
    and a wrong value in each part of a spec, named by its dotted path."""
    assert {c[0] for c in CASES} >= {"train", "sweep", "validate", "report"}
    named = {c[3].removeprefix("error: ").split(".")[0].split(":")[0] for c in CASES}
    assert named >= {"name", "device", "data", "model", "noise", "train", "output", "grid", "seeds", "base"}, named
