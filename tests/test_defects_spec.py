"""Defects found by review and fault injection (issue 19), each pinned by the test that failed
before its fix: specs that compare kinds, code that must never run, folders that must stay
inside runs/, messages that must say the real reason, and inputs that must be refused in one
line rather than hang, recurse or fill memory."""

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from noisecli.spec import ModelSpec, Spec, load_spec, spec_from_dict, spec_to_dict
from tests.conftest import TINY, run_process, write_spec

GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}
MARKOV = {"kind": "markov", "block_size": 16, "n_tokens": 2000}


def one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out + err, err
    return lines[0]


# ---------------------------------------------------------------- 1. a sweep comparing gpt with hf


def test_a_sweep_comparing_gpt_with_an_hf_model_validates_and_dry_runs(cli, tmp_path):
    sweep = write_spec(tmp_path, {"name": "gpt-vs-hf", "base": {"data": MARKOV},
                                  "grid": {"model": [{"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16},
                                                     {"kind": "hf", "config": GPT2}]}}, "sweep.yaml")
    code, out, err = cli("validate", sweep)
    assert code == 0 and "2 points" in out, err
    code, out, err = cli("sweep", sweep, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert code == 0 and "sweep gpt-vs-hf: 2 points" in out, err
    assert not (tmp_path / "runs").exists()


def test_a_kind_section_reads_another_kinds_option_as_unset_and_a_typo_still_fails():
    gpt = ModelSpec(kind="gpt")
    assert gpt.path is None and gpt.config is None and gpt.n_layer == 4
    with pytest.raises(AttributeError):
        gpt.no_such_option  # noqa: B018 - no kind declares it: a bug in noisecli, not a spec


# ---------------------------------------------------------------- 2. a tokenizer's code never runs unasked


def tokenizer_with_code(folder: Path, marker: Path) -> Path:
    """A real tokenizer folder whose tokenizer_config.json names its own Python file (auto_map);
    importing that file would create `marker`."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["the quick brown fox " * 20], trainers.BpeTrainer(
        vocab_size=270, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class", None)  # with no class of its own, transformers asks whether to run the code
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenization_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    return folder


@pytest.mark.parametrize("data", [{"kind": "pydoc", "block_size": 16},
                                  {"kind": "sft", "path": "pairs.jsonl"}], ids=["text", "sft"])
def test_a_tokenizer_that_ships_code_is_refused_even_when_stdin_says_yes(tmp_path, data):
    marker = tmp_path / "code-ran"
    tokenizer_with_code(tmp_path / "tok", marker)
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "a", "response": "b"}\n' * 4)
    spec = write_spec(tmp_path, {"data": {**data, "tokenizer": "tok"},
                                 "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16},
                                 "train": {"max_steps": 1, "batch_size": 2, "eval_batches": 1}})
    done = run_process("train", spec, "--runs-dir", "runs", cwd=tmp_path, input="y\n")
    line = one_error_line(done.returncode, done.stdout, done.stderr)
    assert line.startswith(f"error: data.tokenizer: {tmp_path / 'tok'} ships its own Python code") and \
        "tokenizer_config.json auto_map names tokenization_evil.py" in line, line
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_every_loader_is_told_trust_remote_code_and_reads_no_stdin(tmp_path, monkeypatch):
    """Even past the auto_map check, transformers is never left to decide, or to ask."""
    import io
    import sys

    from noisecli.hub import load_local

    seen = {}

    class Loader:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.update(kwargs, stdin=sys.stdin.read())
            return "loaded"

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert load_local(Loader, str(tmp_path), "model.path", trust_remote_code=False) == "loaded"
    assert seen == {"local_files_only": True, "trust_remote_code": False, "stdin": ""}


# ---------------------------------------------------------------- 3. point folders stay inside runs/<sweep>/


def test_grid_keys_into_a_free_form_mapping_name_points_inside_the_sweep_folder(tmp_path):
    from noisecli.sweep import load_plan

    outside = tmp_path / "outside"
    sweep = write_spec(tmp_path, {"name": "esc", "base": {"data": MARKOV, "model": {"kind": "hf", "config": GPT2}},
                                  "grid": {f"model.config.label2id.{outside}": [0, 1],
                                           "model.config.label2id.x/y": [2, 3]}}, "sweep.yaml")
    plan = load_plan(sweep)
    sweep_dir = (tmp_path / "runs" / "esc").resolve()
    names = [p.name for p in plan.points]
    assert len(names) == len(set(names)) == 4 and not outside.exists()
    for name in names:
        assert "/" not in name and not name.startswith(".") and len(name) <= 100, name
        assert (sweep_dir / name).resolve().parent == sweep_dir
    assert load_plan(sweep).to_dict()["points"] == plan.to_dict()["points"]  # stable


def test_ordinary_point_names_are_unchanged():
    from noisecli.sweep import point_name

    short = {"noise.kind": "kind", "noise.factor": "factor", "train.lr": "lr"}
    assert point_name({"noise.kind": "input", "noise.factor": 0.05, "train.lr": 1e-3}, short, 2) == \
        "kind-input_factor-0.05_lr-0.001_seed-2"


# ---------------------------------------------------------------- 4. a cached model that fails says why


def fake_cache(root: Path, repo: str, files: dict[str, str]) -> Path:
    """A cache laid out as huggingface_hub lays it out: refs/main -> snapshots/<commit>/."""
    commit = "0" * 40
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


@pytest.mark.parametrize("config,reason", [('{"model_type": "nosuchtype"}', "nosuchtype"),
                                           ('{"model_type": "gpt2", ', "JSON")], ids=["unknown-type", "corrupt"])
def test_a_cached_model_that_fails_to_load_says_why_not_that_it_is_missing(tmp_path, config, reason):
    snapshot = fake_cache(tmp_path / "hub", "local/weird", {"config.json": config})
    spec = write_spec(tmp_path, {"data": MARKOV, "model": {"kind": "hf", "path": "local/weird"}})
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = run_process("validate", spec, cwd=tmp_path, env=env)
    line = one_error_line(done.returncode, done.stdout, done.stderr)
    assert line.startswith(f"error: model.path: cannot load local/weird (found in the local Hugging Face cache "
                           f"at {snapshot}): ") and reason in line and "not in the local" not in line, line
    done = run_process("validate", spec, "model.path=local/absent", cwd=tmp_path, env=env)
    assert "'local/absent' is not a local folder and not in the local Hugging Face cache" in \
        one_error_line(done.returncode, done.stdout, done.stderr)


# ---------------------------------------------------------------- 5. the user's traceback, on request

HELPER = '''
def width_helper(width):
    raise ValueError(f"width {width} is odd")

def build(n_inputs, width=3):
    return width_helper(width)
'''


@pytest.mark.parametrize("command", ["validate", "train"])
def test_user_code_errors_are_one_line_and_the_traceback_is_there_on_request(cli, tmp_path, monkeypatch, command):
    (tmp_path / "mine.py").write_text(HELPER)
    spec = write_spec(tmp_path, {"data": {"kind": "digits", "train_size": 100},
                                 "model": {"kind": "python", "target": "mine.py:build"}})
    args = [command, spec] + (["--runs-dir", tmp_path / "runs"] if command == "train" else [])
    monkeypatch.delenv("NOISECLI_DEBUG", raising=False)
    line = one_error_line(*cli(*args))
    assert line.endswith("raised ValueError: width 3 is odd (set NOISECLI_DEBUG=1 for the traceback)"), line
    monkeypatch.setenv("NOISECLI_DEBUG", "1")
    code, out, err = cli(*args)
    assert code == 2 and "Traceback (most recent call last)" in err and "in width_helper" in err, err
    assert err.rstrip().splitlines()[-1].endswith("raised ValueError: width 3 is odd")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 6. inputs that hang or fill memory


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    assert stat.S_ISFIFO(path.stat().st_mode)
    return path


def test_a_fifo_or_a_device_as_the_spec_is_refused_at_once(cli, tmp_path):
    for path in (make_fifo(tmp_path / "spec.yaml"), Path("/dev/zero")):
        for command in ("validate", "train", "sweep"):
            line = one_error_line(*cli(command, path, *(["--runs-dir", tmp_path / "runs"] if command != "validate"
                                                       else [])))
            assert line == f"error: {path}: not a regular file (a pipe, a device or a socket); give a YAML file"
    assert not (tmp_path / "runs").exists()


def test_a_spec_file_larger_than_10_mb_is_refused(cli, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 1_100_000)
    assert one_error_line(*cli("validate", path)) == f"error: {path}: larger than 10 MB; a spec is a small YAML file"


@pytest.mark.parametrize("data", [{"kind": "sft", "path": "DATA"}, {"kind": "text", "path": "DATA"},
                                  {"kind": "npz", "path": "DATA"}], ids=["sft", "text", "npz"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_a_device_as_the_data_path_is_refused_at_once(cli, tmp_path, data, special):
    path = make_fifo(tmp_path / "data.jsonl") if special == "fifo" else Path(special)
    model = {"kind": "mlp"} if data["kind"] == "npz" else {"kind": "gpt"}
    spec = write_spec(tmp_path, {"data": {**data, "path": str(path)}, "model": model})
    for command in ("validate", "train"):
        line = one_error_line(*cli(command, spec, *(["--runs-dir", tmp_path / "runs"] if command == "train" else [])))
        assert line == f"error: data.path: not a regular file (a pipe, a device or a socket): {path}"
    assert not (tmp_path / "runs").exists()


def test_a_grid_of_33_million_points_is_refused_at_once_with_its_size(cli, tmp_path):
    import time

    sweep = write_spec(tmp_path, {"name": "huge", "base": TINY,
                                  "grid": {"train.lr": [1e-3 + i * 1e-6 for i in range(330)],
                                           "train.weight_decay": [i * 1e-4 for i in range(320)],
                                           "noise.factor": [i * 1e-3 for i in range(320)]}}, "sweep.yaml")
    start = time.perf_counter()
    line = one_error_line(*cli("validate", sweep))
    assert time.perf_counter() - start < 10
    assert line.startswith("error: grid: 33,792,000 points (330 x 320 x 320 values x 1 seed); a sweep has at "
                           "most 100,000"), line


def test_yaml_limits_leave_ordinary_anchors_and_merge_keys_alone(tmp_path):
    spec = tmp_path / "spec.yaml"
    text = ("data: {kind: digits}\nmodel: &m {kind: mlp, hidden: [8]}\n"
            "train:\n  <<: {epochs: 2, lr: 0.01}\n  lr: 0.02\n")
    spec.write_text(text)
    loaded = load_spec(spec)
    assert loaded.train.lr == 0.02 and loaded.train.epochs == 2 and loaded.model.hidden == [8]


# ---------------------------------------------------------------- 7. an omitted section is its kind's defaults


def test_an_omitted_model_or_data_section_resolves_exactly_like_its_kind_written_out(tmp_path, cli):
    short = spec_to_dict(spec_from_dict({"name": "a", "noise": {"kind": "input", "factor": 0.1}}))
    written = spec_to_dict(spec_from_dict({
        "name": "a", "noise": {"kind": "input", "factor": 0.1},
        "data": {"kind": "digits", "standardize": True},
        "model": {"kind": "mlp", "hidden": [256, 256], "activation": "relu", "dropout": 0.0}}))
    assert short == written
    assert short["model"] == {"kind": "mlp", "init": None, "init_sha256": None, "hidden": [256, 256],
                              "activation": "relu", "dropout": 0.0}
    assert spec_to_dict(Spec(name="a", noise=spec_from_dict({"noise": {"kind": "input", "factor": 0.1}}).noise)) \
        == short
    # and so a rerun with the defaults written out is the same run, not "a different spec"
    first = write_spec(tmp_path, {"name": "same", "data": {"kind": "digits", "train_size": 60},
                                  "train": {"epochs": 1, "batch_size": 30}})
    raw = yaml.safe_load(first.read_text())
    code, _, err = cli("train", first, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    second = write_spec(tmp_path, {**raw, "model": {"kind": "mlp", "hidden": [256, 256]}}, "second.yaml")
    code, _, err = cli("train", second, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0 and "different" not in err, err
