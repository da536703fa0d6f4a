"""What a researcher meets first (issue 25): each noise kind's own default factor, train.max_steps
deciding alone, one rule for paths given as overrides (and KEY=null), and messages that name what
was typed: a damaged last.pt, an override on a sweep, every bad Hugging Face path at once."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from noisecli import catalog
from noisecli.errors import DamagedFile, SpecError
from noisecli.reference import render
from noisecli.run_files import first_line, read_checkpoint
from noisecli.spec import HubName, apply_overrides, load_spec, spec_diff, spec_from_dict, spec_to_dict
from noisecli.sweep import load_plan
from tests.conftest import TINY, write_spec

TOKENS_SPEC = {"data": {"kind": "markov", "block_size": 8, "n_tokens": 2000}, "model": {"kind": "gpt", "n_layer": 1,
                                                                                      "n_head": 2, "n_embd": 8}}
# digits, 300 training examples in batches of 16: 19 steps an epoch, 57 in the default 3 epochs
STEPS = {"data": {"kind": "digits", "train_size": 300}, "model": {"kind": "mlp", "hidden": [16]},
         "train": {"batch_size": 16, "lr": 1e-3}}


def spec_for(kind: str, **noise) -> dict:
    """A spec whose data and model the noise kind acts on."""
    entry = catalog.NOISE[kind]
    base = TOKENS_SPEC if entry.modalities == {catalog.TOKENS} else {"data": {"kind": "digits"}}
    return {**base, "noise": {"kind": kind, **noise}}


# ---------------------------------------------------------------- 2. each kind's own default factor


@pytest.mark.parametrize("kind", list(catalog.NOISE))
def test_a_kind_given_without_a_factor_gets_its_own_typical_strength_written_out(kind):
    entry = catalog.NOISE[kind]
    spec = spec_from_dict(spec_for(kind))
    assert spec.noise[0].factor == entry.example_factor
    assert spec_to_dict(spec)["noise"]["factor"] == entry.example_factor  # what spec.yaml and --show say
    if kind == "none":
        assert entry.example_factor == 0 and spec.noise_label == "none"
    else:  # every kind has a strength that does something, and says it where the factor is described
        assert entry.example_factor > 0
        assert "typically" in entry.factor and entry.factor.endswith(f"; default {entry.example_factor:g}")
    assert spec_from_dict(spec_for(kind, factor=0.02)).noise[0].factor == 0.02  # a factor given is kept


def test_neftune_and_token_defaults_are_the_papers_not_a_hundredth():
    assert spec_from_dict(spec_for("embedding")).noise_label == "embedding 5"
    assert spec_from_dict(spec_for("token")).noise_label == "token 0.1"


def test_list_noise_and_the_reference_show_each_kinds_range_and_default(cli):
    code, out, _ = cli("list", "noise")
    assert code == 0
    reference = render()
    for entry in catalog.NOISE.values():
        if entry.name == "none":
            continue
        line = next(li for li in out.splitlines() if li.strip().startswith(entry.name + " "))
        assert f"factor = {entry.factor}]" in line and f"default {entry.example_factor:g}]" in line
        assert f"factor = {entry.factor}." in reference
    assert (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text() == reference


def test_a_noise_list_and_a_grid_of_kinds_without_factors_get_each_kinds_default(tmp_path):
    listed = spec_from_dict({"data": {"kind": "digits"}, "noise": [{"kind": "input"}, {"kind": "weight"}]})
    assert [n.factor for n in listed.noise] == [0.1, 0.01] and listed.noise_label == "input+weight 0.1/0.01"
    sweep = write_spec(tmp_path, {"name": "kinds", "base": {**TINY, "noise": {"kind": "none"}},
                                  "grid": {"noise.kind": ["none", "input", "weight", "activation"]}})
    plan = load_plan(sweep)
    assert {p.spec.noise[0].kind: p.spec.noise[0].factor for p in plan.points} == {
        "none": 0.0, "input": 0.1, "weight": 0.01, "activation": 0.1}
    override = load_spec(write_spec(tmp_path, {**TINY, "noise": {"kind": "input"}}), ["noise.kind=weight"])
    assert override.noise[0].factor == 0.01  # the kind switched on the command line brings its own default


def test_validate_show_prints_the_factor_actually_used(cli, tmp_path):
    spec = write_spec(tmp_path, {"name": "neft", **spec_for("embedding")})
    code, out, err = cli("validate", spec, "--show")
    assert code == 0, err
    assert yaml.safe_load(out.split("# splits")[0])["noise"]["factor"] == 5.0


def test_a_baseline_saved_with_the_old_none_factor_resumes_and_other_kinds_are_compared(cli, tmp_path):
    """Before per-kind defaults, spec.yaml held `factor: 0.01` for `none` too: it cannot matter, so a
    run saved that way is still the same run; a kind's factor is compared as ever."""
    new = spec_to_dict(spec_from_dict({"name": "b", "noise": {"kind": "none"}}))
    old = {**new, "noise": {**new["noise"], "factor": 0.01}}
    assert spec_diff(old, new) == []
    weight = spec_to_dict(spec_from_dict({"name": "w", "noise": {"kind": "weight", "factor": 0.05}}))
    assert spec_diff({**weight, "noise": {**weight["noise"], "factor": 0.01}}, weight) == [
        "noise.factor: 0.01 -> 0.05"]
    spec = write_spec(tmp_path, {"name": "base", **TINY, "noise": {"kind": "none"}})
    assert cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    saved = tmp_path / "runs" / "base" / "spec.yaml"
    saved.write_text(saved.read_text().replace("factor: 0.0", "factor: 0.01"))
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "already completed" in out, err


# ---------------------------------------------------------------- 3. train.max_steps alone decides


def test_max_steps_alone_trains_exactly_that_many_steps_and_the_header_says_why(cli, tmp_path):
    spec = write_spec(tmp_path, {"name": "ms", **STEPS, "train": {**STEPS["train"], "max_steps": 60}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert out.splitlines()[0].endswith("; 60 steps (train.max_steps)")
    folder = tmp_path / "runs" / "ms"
    status = json.loads((folder / "status.json").read_text())
    assert (status["state"], status["step"], status["steps_per_epoch"]) == ("completed", 60, 19)
    saved = yaml.safe_load((folder / "spec.yaml").read_text())["train"]
    assert (saved["epochs"], saved["max_steps"]) == (None, 60)  # the bound, explicit: resumes read the same
    again = spec_from_dict(yaml.safe_load((folder / "spec.yaml").read_text()))
    assert again.train.step_budget(19) == (60, "train.max_steps")
    code, out, _ = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "already completed" in out


def test_with_both_bounds_the_smaller_wins_and_the_header_names_it(cli, tmp_path):
    spec = write_spec(tmp_path, {"name": "both", **STEPS, "train": {**STEPS["train"], "epochs": 3, "max_steps": 60}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert out.splitlines()[0].endswith("; 57 steps (3 epochs of 19 steps)")
    assert json.loads((tmp_path / "runs" / "both" / "status.json").read_text())["step"] == 57
    capped = spec_from_dict({"train": {"epochs": 3, "max_steps": 20}})
    assert capped.train.step_budget(19) == (20, "train.max_steps")
    assert spec_from_dict({}).train.step_budget(19) == (57, "3 epochs of 19 steps")  # neither: 3 epochs
    assert spec_from_dict({"train": {"epochs": 1}}).train.step_budget(1) == (1, "1 epoch of 1 step")


def test_an_old_spec_yaml_with_epochs_3_and_max_steps_resumes_with_the_old_bound(cli, tmp_path):
    """Older noisecli wrote `epochs: 3` beside `max_steps: 60` for a spec that gave max_steps alone:
    read back, it is a spec that gives both, and trains the 57 steps it trained then."""
    old = spec_to_dict(spec_from_dict({"name": "old", **STEPS, "train": {**STEPS["train"], "max_steps": 60}}))
    old["train"]["epochs"] = 3
    assert spec_from_dict(old).train.step_budget(19) == (57, "3 epochs of 19 steps")
    saved = write_spec(tmp_path, old, "old.yaml")
    assert cli("train", saved, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    folder = tmp_path / "runs" / "old"
    assert json.loads((folder / "status.json").read_text())["step"] == 57
    assert yaml.safe_load((folder / "spec.yaml").read_text())["train"]["epochs"] == 3
    code, out, err = cli("train", folder / "spec.yaml", "--runs-dir", tmp_path / "runs")
    assert code == 0 and "already completed" in out, err  # its own spec.yaml is the same run


# ---------------------------------------------------------------- 4. paths given as overrides


@pytest.fixture
def two_folders(tmp_path, monkeypatch):
    """exp/ holds the spec, work/ is the current folder; each holds files the other lacks."""
    exp, work = tmp_path / "exp", tmp_path / "work"
    for folder in (exp, work):
        folder.mkdir()
        (folder / "code.py").write_text(
            "import numpy as np\nimport torch\n\n"
            "def blobs():\n    rng = np.random.default_rng(0)\n"
            "    return {'x': rng.normal(size=(40, 3)).astype('float32'), 'y': (np.arange(40) % 2)}\n\n"
            "def mlp(n_inputs, n_outputs):\n    return torch.nn.Linear(n_inputs, n_outputs)\n")
        np.savez(folder / "d.npz", x=np.zeros((20, 3), dtype="float32"), y=np.arange(20) % 2)
        (folder / "hf").mkdir()
    (exp / "only-next-to-the-spec").mkdir()
    (work / "only-here").mkdir()
    monkeypatch.chdir(work)
    return exp, work


@pytest.mark.parametrize("raw,override,key", [
    ({"data": {"kind": "npz", "path": "d.npz"}}, "data.path=d.npz", ("data", "path")),
    ({"data": {"kind": "python", "target": "code.py:blobs"}}, "data.target=code.py:blobs", ("data", "target")),
    ({"data": {"kind": "python", "target": "code.py:blobs"}, "model": {"kind": "python", "target": "code.py:mlp"}},
     "model.target=code.py:mlp", ("model", "target")),
    ({"data": {"kind": "pydoc", "tokenizer": "hf"}, "model": {"kind": "hf", "path": "hf"}}, "model.path=hf",
     ("model", "path")),
    ({"data": {"kind": "pydoc", "tokenizer": "hf"}, "model": {"kind": "hf", "path": "hf"}}, "data.tokenizer=hf",
     ("data", "tokenizer")),
])
def test_an_override_path_is_relative_to_the_current_folder_the_spec_files_to_the_spec(two_folders, raw, override,
                                                                                        key):
    exp, work = two_folders
    spec_file = write_spec(exp, raw)
    section, name = key
    in_spec = getattr(getattr(load_spec(spec_file), section), name)
    overridden = getattr(getattr(load_spec(spec_file, [override]), section), name)
    assert in_spec.startswith(str(exp.resolve())) and overridden.startswith(str(work.resolve()))
    assert overridden.split(":")[0] == str(work.resolve() / override.split("=")[1].split(":")[0])


@pytest.mark.parametrize("override,message", [
    ("data.path=only.npz", "data.path: file not found: {work}/only.npz"),
    ("data.target=only.py:blobs", "data.target: file not found: {work}/only.py"),
])
def test_an_override_path_missing_here_is_not_looked_for_next_to_the_spec(two_folders, override, message):
    exp, work = two_folders
    np.savez(exp / "only.npz", x=np.zeros((20, 3), dtype="float32"), y=np.arange(20) % 2)
    (exp / "only.py").write_text("def blobs():\n    return {}\n")
    kind = "npz" if "path" in override else "python"
    spec_file = write_spec(exp, {"data": {"kind": kind, **({"path": "d.npz"} if kind == "npz" else
                                                            {"target": "code.py:blobs"})}})
    with pytest.raises(SpecError) as e:
        load_spec(spec_file, [override])
    assert e.value.problems == [message.format(work=work.resolve())]


def test_a_hugging_face_name_never_falls_back_to_a_folder_of_the_other_place(two_folders):
    exp, work = two_folders
    spec_file = write_spec(exp, {"data": {"kind": "pydoc", "tokenizer": "hf"}, "model": {"kind": "hf", "path": "hf"}})
    named = load_spec(spec_file, ["model.path=only-next-to-the-spec"])
    assert named.model.path == "only-next-to-the-spec" and type(named.model.path) is str  # a cache name
    assert yaml.safe_dump(spec_to_dict(named))  # written as a plain string
    with pytest.raises(SpecError) as e:  # in the spec file: a folder next to it, or a name, never ./only-here
        load_spec(write_spec(exp, {"data": {"kind": "pydoc", "tokenizer": "hf"},
                                   "model": {"kind": "hf", "path": "only-here"}}))
    assert e.value.problems == [
        f"model.path: 'only-here' is not a folder next to the spec file ({exp / 'only-here'} not found), and as a "
        f"Hugging Face name it would be read from {(work / 'only-here').resolve()} in the current folder; give the "
        "folder's path relative to the spec file, or an absolute path"]


def test_an_override_of_a_csv_label_column_is_not_a_path(two_folders):
    exp, work = two_folders
    (exp / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)))
    spec = load_spec(write_spec(exp, {"data": {"kind": "csv", "path": "t.csv"}}), ["data.target=label"])
    assert spec.data.target == "label" and spec.data.path == str((exp / "t.csv").resolve())
    assert isinstance(apply_overrides({"model": {"kind": "hf"}}, ["model.path=org/name"])["model"]["path"], HubName)


def test_key_null_removes_the_key_so_a_python_spec_switches_to_npz(two_folders, cli):
    exp, work = two_folders
    spec_file = write_spec(exp, {"name": "sw", "data": {"kind": "python", "target": "code.py:blobs"}})
    switch = ["data.kind=npz", "data.target=null", "data.path=d.npz"]
    spec = load_spec(spec_file, switch)
    assert spec.data.kind == "npz" and spec.data.path == str(work.resolve() / "d.npz")
    assert "target" not in spec_to_dict(spec)["data"]
    code, out, err = cli("validate", spec_file, *switch)
    assert (code, err) == (0, "") and out.startswith(f"ok: {spec_file} (run 'sw': data npz")
    code, _, err = cli("validate", spec_file, *switch[::2])  # the target left in: one line says so
    assert code == 2 and err == "error: data.target: does not apply to data kind 'npz' (used by python, csv)\n"
    code, _, err = cli("validate", spec_file, "data.targt=null")
    assert code == 2 and err == ("error: override 'data.targt=null': no key 'targt' in data to remove; "
                                 "did you mean 'target'?\n")
    assert load_spec(spec_file, ["train.max_steps=null"]).train.max_steps is None  # absent: nothing to remove
    listed = apply_overrides({"noise": [{"kind": "input"}, {"kind": "weight"}]}, ["noise.1=null"])
    assert listed["noise"] == [{"kind": "input"}]


# ---------------------------------------------------------------- 5a. a damaged last.pt, in whole words


def test_first_line_keeps_the_first_sentence_or_whole_words():
    torch_like = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. "
                              "This is an internal miniz error. If you are seeing this error, there is a high "
                              "likelihood that your checkpoint file is corrupted.")
    assert first_line(torch_like, 100) == ("RuntimeError: PytorchStreamReader failed reading zip archive: failed "
                                           "finding central directory")
    words = ValueError("word " * 40)
    assert first_line(words, 22) == "ValueError: word word word word ..."
    assert first_line(ValueError("x" * 30), 10) == "ValueError: " + "x" * 30  # one word is never cut
    assert first_line(ValueError("short. and more"), 100) == "ValueError: short. and more"


@pytest.mark.parametrize("damage", ["cut short", "garbage", "a zip of nothing"])
def test_a_damaged_last_pt_warning_is_whole_words_and_the_run_resumes_from_prev(cli, tmp_path, damage):
    spec = write_spec(tmp_path, {"name": "tiny", **TINY})
    assert cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    folder = tmp_path / "runs" / "tiny"
    last = folder / "checkpoints" / "last.pt"
    data = last.read_bytes()
    if damage == "cut short":
        last.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        last.write_bytes(b"not a checkpoint at all " * 20)
    else:
        with zipfile.ZipFile(last, "w") as z:
            z.writestr("nothing", "")
    with pytest.raises(DamagedFile) as e:
        read_checkpoint(last)
    (line,) = e.value.problems
    reason = line.split(f"{last}: cannot load (", 1)[1][:-1]
    if damage == "garbage":  # torch reads it as a pickle it refuses: no words of its own worth keeping
        assert reason == ("not a torch checkpoint: cut short, corrupt, or a pickle of objects other than tensors "
                          "and plain data, which are never loaded")
    else:
        assert reason.startswith("cut short or not a checkpoint: ") == (damage == "cut short")
        try:
            torch.load(last, weights_only=True)
        except Exception as raw:  # noqa: BLE001 - torch's own words, to compare with
            message, kind = str(raw).splitlines()[0], type(raw).__name__
        said = reason.split(f"{kind}: ", 1)[1]
        assert message == said or message.startswith(said + ". ")  # whole sentences, never cut mid-word
    status = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0
    assert err == f"warning: {line}; resuming from prev.pt (step 16) instead\n"


# ---------------------------------------------------------------- 5b. an override on a sweep


SWEEP = {"name": "sw", "base": {**TINY, "noise": {"kind": "input"}}, "grid": {"noise.factor": [0.1, 0.2]}}


@pytest.mark.parametrize("sweep,override,message", [
    (SWEEP, "noise.kind=inptu", "error: noise.kind: unknown noise kind 'inptu'; did you mean 'input'? "
                                "(noisecli list noise)"),
    (SWEEP, "train.lr=abc", "error: train.lr: must be a number, got 'abc' (str)"),
    (SWEEP, "noise.factor=0.3", "error: override 'noise.factor=0.3': the grid sets noise.factor at every point, so "
                                "this value would never be used; put it in the grid's values of noise.factor, or "
                                "leave it out"),
    ({**SWEEP, "grid": {"noise": [{"kind": "none"}, {"kind": "input", "factor": 0.3}]}}, "noise.kind=inptu",
     "error: override 'noise.kind=inptu': the grid sets noise at every point, so this value would never be used; "
     "put it in the grid's values of noise, or leave it out"),
    (SWEEP, "seed=4", "error: override 'seed=4': each point's seed comes from the sweep's seeds; give --seeds "
                      "instead"),
])
def test_an_override_mistake_on_a_sweep_names_the_key_as_typed(cli, tmp_path, sweep, override, message):
    spec = write_spec(tmp_path, sweep)
    code, out, err = cli("sweep", spec, override, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert (code, out, err) == (2, "", message + "\n")


def test_the_teacher_sweep_with_a_misspelled_kind_is_refused_not_ignored(cli, tmp_path):
    spec = Path(__file__).resolve().parents[1] / "experiments" / "teacher-sweep.yaml"
    code, out, err = cli("sweep", spec, "noise.kind=inptu", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert code == 2 and out == "" and err.startswith("error: override 'noise.kind=inptu': the grid sets noise ")
    assert len(err.splitlines()) == 1


def test_an_override_problem_only_some_points_have_is_said_for_those_points(tmp_path):
    """Token noise takes a probability: factor 2 is wrong with token noise only, so it is that point's."""
    sweep = write_spec(tmp_path, {"name": "k", "base": {**TOKENS_SPEC, "noise": {"kind": "token"}},
                                  "grid": {"noise.kind": ["token", "embedding"]}})
    with pytest.raises(SpecError) as e:
        load_plan(sweep, overrides=["noise.factor=2"])
    assert e.value.problems == ["grid point noise.kind=token: noise.factor: token noise replaces each token with "
                                "probability factor; must be in [0, 1], got 2.0"]


# ---------------------------------------------------------------- 5c. every bad hf path said


@pytest.mark.parametrize("data", [{"kind": "text", "path": "t.txt"}, {"kind": "sft", "path": "t.jsonl"}])
def test_validate_says_every_bad_hugging_face_path_one_line_each(cli, tmp_path, monkeypatch, data):
    """Folders that hold no model and no tokenizer (local files only: nothing can download); for
    instruction data the tokenizer is found bad by building the data, after the model's check."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("empty-model", "empty-tokenizer"):
        (tmp_path / name).mkdir()
    (tmp_path / "t.txt").write_text("hello world\n" * 50)
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "say hi", "response": "hi"}) + "\n")
    spec = write_spec(tmp_path, {"data": {**data, "tokenizer": "empty-tokenizer"},
                                 "model": {"kind": "hf", "path": "empty-model"}})
    code, out, err = cli("validate", spec)
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 2, err
    assert lines[0].startswith(f"error: model.path: cannot load {tmp_path / 'empty-model'}: ")
    assert lines[1].startswith(f"error: data.tokenizer: cannot load {tmp_path / 'empty-tokenizer'}: ")
