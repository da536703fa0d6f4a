"""`model.kind: hf`, `data.tokenizer` and `data.kind: hf` with real transformers, tokenizers and
datasets objects, made small: a GPT-2 of one or two blocks, a 300-token BPE tokenizer trained
here on pydoc text, and datasets written with save_to_disk."""

import shutil
import sys

import datasets
import pytest
import torch
import transformers  # in the test extra: these tests use the real package, never a stand-in
import yaml

from noisecli.data import load_dataset
from noisecli.errors import SpecError
from noisecli.models import build_model
from noisecli.noise.activation import default_activation_targets
from noisecli.noise.params import select_parameters
from noisecli.spec import load_spec, spec_from_dict
from noisecli.trainer import Trainer
from tests.conftest import run_process, write_spec
from tests.test_noise import assert_steps_never_read_back
from tests.test_train import assert_resume_is_exact, train_run

GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32}
FRESH = {
    "data": {"kind": "markov", "block_size": 16, "n_tokens": 4000},
    "model": {"kind": "hf", "config": GPT2},
    "train": {"epochs": 1, "max_steps": 24, "batch_size": 8, "lr": 3e-3, "eval_every": 8, "eval_batches": 2},
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A folder as `save_pretrained` writes it: a 1-block GPT-2 and its own BPE tokenizer."""
    from pydoc_data.topics import topics
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    text = "".join(topics[k] for k in sorted(topics))[:50_000]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(123)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                                     bos_token_id=None, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    return folder, tokenizer, model.state_dict()


def spec_of(raw, tmp_path):
    return load_spec(write_spec(tmp_path, raw))


def test_a_fresh_model_from_a_config_learns_and_gets_the_datas_vocabulary(tmp_path):
    trainer = train_run(write_spec(tmp_path, {**FRESH, "name": "fresh"}), tmp_path / "runs")
    gpt2 = trainer.raw_model.model
    assert type(gpt2).__name__ == "GPT2LMHeadModel" and len(gpt2.transformer.h) == 2
    assert gpt2.config.vocab_size == trainer.data.n_outputs == 16  # markov's default vocabulary
    first, last = trainer.state.rows[0]["val_loss"], trainer.state.rows[-1]["val_loss"]
    assert last < first < 2.9  # it learns (log 16 = 2.77 is where an untrained model starts)
    assert (tmp_path / "runs" / "fresh" / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("noise", [{"kind": "activation", "factor": 0.3},
                                   {"kind": "embedding", "factor": 5.0},
                                   {"kind": "weight", "factor": 0.01}])
def test_resume_of_an_hf_run_is_exact(tmp_path, noise):
    spec = write_spec(tmp_path, {**FRESH, "name": "r", "noise": noise})
    assert_resume_is_exact(spec, tmp_path, stop_after=11)


def test_noise_defaults_find_gpt2_blocks_and_conv1d_weights(tmp_path):
    spec = spec_of({**FRESH, "name": "d"}, tmp_path)
    data = load_dataset(spec.data)
    model = build_model(spec.model, data)
    assert default_activation_targets(model) == ["model.transformer.h.0", "model.transformer.h.1"]
    named = {id(p): n for n, p in model.named_parameters()}
    chosen = {named[id(p)] for p in select_parameters(model, None, "noise")}
    # GPT-2's attention and MLP layers are transformers' Conv1D, not nn.Linear: they count
    assert "model.transformer.h.0.attn.c_attn.weight" in chosen and "model.transformer.h.1.mlp.c_proj.weight" in chosen
    assert "model.transformer.wte.weight" in chosen  # tied with lm_head: chosen once
    assert not any(n.endswith(".bias") or ".ln_" in n for n in chosen)


def test_embedding_noise_reaches_hf_input_embeddings_and_only_in_training(tmp_path):
    from noisecli.noise import NoiseContext, build_noises

    spec = spec_of({**FRESH, "name": "e", "noise": {"kind": "embedding", "factor": 8.0}}, tmp_path)
    data = load_dataset(spec.data)
    model = build_model(spec.model, data)
    (noise,) = build_noises(spec.noise, NoiseContext(model, data, 10, torch.device("cpu"), 0))
    wte, ids = model.get_input_embeddings(), data.x_train[:48].view(3, 16)
    clean = wte(ids)
    noise.attach(model)
    noise.before_forward(8.0)
    model.train()
    delta = wte(ids) - clean
    bound = 8.0 / (16 * 32) ** 0.5  # alpha / sqrt(L * d)
    assert 0.9 * bound < delta.abs().max() <= bound
    model.eval()
    assert torch.equal(wte(ids), clean)
    noise.detach()


@pytest.mark.parametrize("noise", [{"kind": "embedding", "factor": 5.0}, {"kind": "activation", "factor": 0.1},
                                   {"kind": "anticorrelated", "factor": 0.01}])
def test_noisecli_adds_no_host_sync_to_an_hf_step(tmp_path, monkeypatch, noise):
    """(transformers' own mask code makes one in eager mode; the README says so.)"""
    spec = spec_of({**FRESH, "name": "s", "noise": noise}, tmp_path)
    assert_steps_never_read_back(Trainer(spec, tmp_path / "r", quiet=True).setup(), monkeypatch)


def test_a_pretrained_folder_loads_its_weights_and_its_tokenizer_encodes_the_text(pretrained, tmp_path):
    folder, tokenizer, saved = pretrained
    raw = {"name": "p", "data": {"kind": "pydoc", "block_size": 32, "tokenizer": str(folder)},
           "model": {"kind": "hf", "path": str(folder)},
           "train": {"epochs": 1, "max_steps": 6, "batch_size": 4, "eval_batches": 1}}
    spec = spec_of(raw, tmp_path)
    data = load_dataset(spec.data)
    assert data.n_outputs == len(tokenizer) == 300
    from pydoc_data.topics import topics

    start = "".join(topics[k] for k in sorted(topics))[:2000]
    expected = tokenizer(start, add_special_tokens=False)["input_ids"][:100]
    assert data.x_train[:100].tolist() == expected  # BPE ids, not characters
    model = build_model(spec.model, data)
    loaded = model.model.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)  # the saved weights, not a fresh init
    trainer = train_run(write_spec(tmp_path, raw), tmp_path / "runs")
    assert trainer.step == 6 and trainer.state.rows[-1]["val_loss"] < 5.8  # log 300 = 5.70 untrained, roughly


def test_a_relative_model_path_is_relative_to_the_spec_file(pretrained, tmp_path):
    folder, _, _ = pretrained
    (tmp_path / "exp").mkdir()
    spec_file = write_spec(tmp_path / "exp", {"data": {"kind": "pydoc", "tokenizer": "../m"},
                                               "model": {"kind": "hf", "path": "../m"}})
    (tmp_path / "m").symlink_to(folder)
    spec = load_spec(spec_file)
    assert spec.model.path == spec.data.tokenizer == str((tmp_path / "m").resolve())
    named = spec_from_dict({"model": {"kind": "hf", "path": "org/model"}, "data": {"kind": "markov"}})
    assert named.model.path == "org/model"  # a hub name stays a name, for the cache lookup


def test_a_name_in_the_local_hugging_face_cache_loads_without_network(pretrained, tmp_path):
    """`model.path: local/tiny` and `data.tokenizer: local/tiny`, found in a cache laid out as
    huggingface_hub lays it out (refs/main -> snapshots/<commit>/), in a real process."""
    folder, _, _ = pretrained
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--local--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    spec = write_spec(tmp_path, {"name": "cached", "data": {"kind": "pydoc", "block_size": 32, "tokenizer": "local/tiny"},
                                 "model": {"kind": "hf", "path": "local/tiny"},
                                 "train": {"max_steps": 3, "batch_size": 4, "eval_batches": 1}})
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = run_process("train", spec, "--runs-dir", "runs", "-q", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((tmp_path / "runs" / "cached" / "spec.yaml").read_text())
    assert saved["model"]["path"] == saved["data"]["tokenizer"] == "local/tiny"
    missing = run_process("train", spec, "model.path=local/other", "--runs-dir", "runs", "-q", cwd=tmp_path,
                          env=env)
    assert missing.returncode == 2 and "'local/other' is not a local folder and not in the local" in missing.stderr


def test_a_damaged_weights_file_is_one_line_naming_the_folder(pretrained, tmp_path, cli):
    folder, _, _ = pretrained
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    spec = write_spec(tmp_path, {"data": {"kind": "pydoc", "tokenizer": str(folder)},
                                 "model": {"kind": "hf", "path": str(damaged)}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.startswith(f"error: model.path: cannot load {damaged}: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_code_shipped_in_a_model_folder_never_runs_unless_asked(tmp_path):
    """A folder whose config points at its own modeling code: without trust_remote_code the
    file is not imported (its marker stays absent) and the user gets one line saying why."""
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "config.json").write_text(
        '{"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", '
        '"AutoModelForCausalLM": "modeling_evil.EvilModel"}}')
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    spec = spec_from_dict({"model": {"kind": "hf", "path": str(folder)}, "data": {"kind": "markov"}})
    assert spec.model.trust_remote_code is False
    with pytest.raises(SpecError) as e:
        build_model(spec.model, load_dataset(spec.data))
    assert "ships its own Python code; set model.trust_remote_code: true only if you trust it" in str(e.value)
    assert not marker.exists()


def test_without_transformers_installed_the_message_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` sees when absent
    spec = spec_of({**FRESH, "name": "x"}, tmp_path)
    with pytest.raises(SpecError) as e:
        build_model(spec.model, load_dataset(spec.data))
    assert "needs the transformers package; install it with pip install 'noisecli[hf]'" in str(e.value)


def test_cli_trains_an_hf_spec_and_keeps_quiet_output_clean(cli, tmp_path):
    spec = write_spec(tmp_path, {**FRESH, "name": "c", "noise": {"kind": "token", "factor": 0.1}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    assert err == ""  # no transformers warnings or progress bars
    assert "model:\n  kind: hf\n  init: null\n  init_sha256: null\n  path: null\n  config:" in (tmp_path / "runs" / "c" / "spec.yaml").read_text()


# ---------------------------------------------------------------- data.kind: hf (save_to_disk folders)

DOCS = ["The quick brown fox.", "jumps over the lazy dog!", "Pack my box with five dozen liquor jugs."] * 20


def saved(tmp_path, splits: dict, single: bool = False) -> str:
    """A folder as `save_to_disk` writes it: a DatasetDict of `splits`, or (single) one Dataset."""
    parts = {k: datasets.Dataset.from_dict(v) for k, v in splits.items()}
    (parts["train"] if single else datasets.DatasetDict(parts)).save_to_disk(str(tmp_path / "ds"))
    return str(tmp_path / "ds")


def hf_data(path, **extra):
    return spec_from_dict({"data": {"kind": "hf", "path": path, "block_size": 8, **extra},
                           "model": {"kind": "gpt"}}).data


def test_a_saved_dataset_with_its_own_validation_split(tmp_path):
    path = saved(tmp_path, {"train": {"text": DOCS, "n": list(range(60))}, "validation": {"text": ["Zebra quiz."] * 5}})
    data = load_dataset(hf_data(path))
    train_text, val_text = "\n\n".join(DOCS), "\n\n".join(["Zebra quiz."] * 5)
    chars = sorted(set(train_text + val_text))  # one vocabulary over both splits
    assert data.n_outputs == len(chars) and "Z" in chars and "Z" not in train_text
    # its own validation text; the test text is the last test_fraction of the training text
    text = lambda ids: "".join(chars[i] for i in ids.tolist())  # noqa: E731
    assert text(data.x_train) + text(data.x_test) == train_text
    assert data.x_test.numel() == int(len(train_text) * 0.2)
    assert text(data.x_val) == val_text
    assert data.info["validation"] == "validation" and data.info["test"] == "last 0.2 of the text"


def test_a_single_saved_dataset_holds_out_the_last_val_fraction(tmp_path):
    path = saved(tmp_path, {"train": {"text": DOCS}}, single=True)
    data = load_dataset(hf_data(path, val_fraction=0.25))
    n = len("\n\n".join(DOCS))
    n_test = int(n * 0.2)  # [train | val | test]: test the last fifth, val a quarter of the whole before it
    assert data.x_test.numel() == n_test and data.x_val.numel() == int(n * 0.25)
    assert data.x_train.numel() == n - n_test - int(n * 0.25)
    assert data.info["validation"] == "0.25 of the text, from its end"


def test_a_saved_dataset_through_a_tokenizer_trains_a_pretrained_model(pretrained, tmp_path, cli):
    folder, tokenizer, _ = pretrained
    path = saved(tmp_path, {"train": {"text": DOCS}, "test": {"text": DOCS[:6]}})
    data = load_dataset(hf_data(path, tokenizer=str(folder)))
    ids = tokenizer("\n\n".join(DOCS), add_special_tokens=False)["input_ids"]
    assert data.x_train.tolist() + data.x_val.tolist() == ids  # validation cut from the training text's end
    assert data.x_test.tolist() == tokenizer("\n\n".join(DOCS[:6]), add_special_tokens=False)["input_ids"]
    assert data.info["test"] == "test"
    spec = write_spec(tmp_path, {"name": "t", "data": {"kind": "hf", "path": path, "tokenizer": str(folder),
                                                       "block_size": 8},
                                 "model": {"kind": "hf", "path": str(folder)}, "noise": {"kind": "token", "factor": 0.1},
                                 "train": {"max_steps": 4, "batch_size": 4, "eval_batches": 1}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err


@pytest.mark.parametrize("splits,extra,message", [
    ({"train": {"txt": DOCS}}, {}, "data.column: 'text' is not a column of the 'train' split"),
    ({"train": {"text": DOCS, "label": [1] * 60}}, {"column": "lable"}, "did you mean 'label'? (columns: text, label)"),
    ({"train": {"text": DOCS, "label": [1] * 60}}, {"column": "label"}, "data.column: 'label' of"),
    ({"training": {"text": DOCS}}, {}, "has splits training but no 'train' split"),
    (None, {}, "cannot read"),
])
def test_saved_dataset_mistakes_are_one_line_and_exit_2(tmp_path, cli, splits, extra, message):
    if splits is None:
        (tmp_path / "ds").mkdir()  # a folder, but not a saved dataset
    else:
        saved(tmp_path, splits)
    spec = write_spec(tmp_path, {"data": {"kind": "hf", "path": "ds", "block_size": 8, **extra},
                                 "model": {"kind": "gpt"}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and message in err and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("source", ["config", "pretrained"])
def test_model_dropout_sets_the_configs_dropout_and_is_off_in_eval(pretrained, tmp_path, source):
    folder, _, saved = pretrained
    model_spec = {"kind": "hf", "config": GPT2} if source == "config" else {"kind": "hf", "path": str(folder)}
    data = {"kind": "markov", "block_size": 16, "n_tokens": 2000, "vocab_size": 200}

    def built(dropout):
        spec = spec_of({"name": "d", "data": data, "model": {**model_spec, "dropout": dropout}}, tmp_path)
        return build_model(spec.model, load_dataset(spec.data))

    x = torch.randint(0, 200, (4, 16))
    on = built(0.5)
    config = on.model.config
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.5
    if source == "pretrained":
        assert all(torch.equal(on.model.state_dict()[k], saved[k]) for k in saved)  # the same weights
    on.train()
    assert not torch.equal(on(x), on(x))  # dropout is on in training
    on.eval()
    assert torch.equal(on(x), on(x))  # and off in evaluation
    off = built(0.0)
    off.train()
    assert off.model.config.resid_pdrop == 0.0 and torch.equal(off(x), off(x))
