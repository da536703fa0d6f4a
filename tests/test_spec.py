"""Spec loading, overrides and validation: every class of mistake, one line each."""

import pytest

from noisecli.errors import SpecError
from noisecli.spec import (NoiseSpec, Spec, apply_overrides, flatten, load_spec, spec_from_dict,
                           spec_to_dict)
from tests.conftest import write_spec


def problems(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as e:
        spec_from_dict(raw)
    return e.value.problems


def test_defaults_fill_a_three_line_spec(tmp_path):
    spec = load_spec(write_spec(tmp_path, {"data": {"kind": "wine"}}, "my-run.yaml"))
    assert spec.name == "my-run"
    assert spec.data.kind == "wine" and spec.model.kind == "mlp"
    # the seed's defaults
    assert (spec.train.epochs, spec.train.lr, spec.train.grad_clip) == (3, 5e-5, 1.0)
    assert spec.noise == [NoiseSpec()] and spec.noise[0].factor == 0.0  # none: each kind has its own default


def test_unknown_key_names_the_dotted_path_and_suggests():
    assert problems({"train": {"lrr": 0.1}}) == ["train.lrr: unknown key; did you mean 'lr'?"]
    assert problems({"trian": {}}) == ["trian: unknown key; did you mean 'train'?"]


def test_unknown_key_without_near_name_lists_valid_keys():
    (p,) = problems({"output": {"zzz": 1}})
    assert p.startswith("output.zzz: unknown key (valid keys: checkpoint")


def test_every_problem_is_reported_at_once():
    got = problems({"train": {"lr": "fast", "epochs": 0, "batch_size": 2.5},
                    "model": {"kind": "mlpp"}, "data": {"val_fraction": 1.5}})
    assert got == [  # the file's order, then the checks across sections
        "train.lr: must be a number, got 'fast' (str)",
        "train.epochs: must be >= 1, got 0",
        "train.batch_size: must be an integer, got 2.5 (float)",
        "data.val_fraction: must be < 1, got 1.5",
        "model.kind: unknown model 'mlpp'; did you mean 'mlp'? (noisecli list models)",
    ]


def test_scientific_notation_without_dot_is_a_number():
    spec = spec_from_dict({"train": {"lr": "1e-4", "max_steps": "2e3"}})
    assert spec.train.lr == 1e-4 and spec.train.max_steps == 2000


def test_wrong_types():
    assert problems({"train": {"compile": "yes"}}) == ["train.compile: must be true or false, got 'yes' (str)"]
    assert problems({"model": {"hidden": ["a"]}}) == ["model.hidden.0: must be an integer, got 'a' (str)"]
    assert problems({"train": "fast"}) == ["train: must be a mapping of keys, got 'fast' (str)"]
    assert problems({"seed": True}) == ["seed: must be an integer, got True (bool)"]


def test_choices_suggest_the_near_value():
    assert problems({"train": {"precision": "bf61"}}) == [
        "train.precision: must be one of auto, fp32, bf16, fp16; got 'bf61'; did you mean 'bf16'?"]
    assert problems({"noise": {"kind": "gausian"}}) == [
        "noise.kind: unknown noise kind 'gausian' (noisecli list noise)"]
    assert problems({"noise": {"kind": "inptu"}})[0].startswith("noise.kind: unknown noise kind 'inptu'; "
                                                                "did you mean 'input'?")


def test_option_of_another_kind_is_refused():
    assert problems({"data": {"kind": "digits", "block_size": 32}}) == [
        "data.block_size: does not apply to data kind 'digits' (used by pydoc, markov, text, hf)"]
    assert problems({"model": {"kind": "linear", "hidden": [3]}}) == [
        "model.hidden: does not apply to model kind 'linear' (used by mlp)"]


def test_input_noise_on_token_ids_is_refused_with_the_reason():
    (p,) = problems({"data": {"kind": "pydoc"}, "model": {"kind": "gpt"}, "noise": {"kind": "input"}})
    assert p.startswith("noise.kind: 'input' adds Gaussian noise to continuous inputs")
    assert "use 'token' or 'embedding'" in p


def test_model_must_read_the_data():
    (p,) = problems({"data": {"kind": "wine"}, "model": {"kind": "cnn"}})
    assert p == "model.kind: 'cnn' cannot read data kind 'wine' (vector); use one of: linear, mlp, python"
    (p,) = problems({"data": {"kind": "digits"}, "model": {"kind": "gpt"}})
    assert p.startswith("model.kind: 'gpt' cannot read data kind 'digits'")


def test_cross_field_checks():
    assert problems({"data": {"kind": "pydoc"}, "model": {"kind": "gpt", "n_embd": 30, "n_head": 4}}) == [
        "model.n_embd: 30 must be a multiple of model.n_head (4)"]
    assert problems({"train": {"lr_schedule": "cosine", "lr": 1e-3, "min_lr": 1e-2}}) == [
        "train.min_lr: 0.01 is above train.lr (0.001); the schedule decays to min_lr"]
    assert problems({"train": {"betas": [0.9]}}) == ["train.betas: must be two numbers in [0, 1), got [0.9]"]
    assert problems({"noise": [{"kind": "input"}, {"kind": "input"}]}) == [
        "noise.1.kind: 'input' is listed twice; give it once"]
    assert problems({"noise": [{"kind": "none"}, {"kind": "input"}]}) == [
        "noise.0.kind: 'none' cannot be combined with other kinds"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", ".hidden", "", "x" * 101])
def test_run_names_cannot_escape_the_runs_folder(name):
    (p,) = problems({"name": name})
    assert p.startswith(f"name: {name!r} must be 1-100 letters")


def test_device_is_checked():
    assert problems({"device": "gpu"}) == ["device: must be auto, cpu, cuda, cuda:N or mps; got 'gpu'"]
    assert spec_from_dict({"device": "cuda:1"}).device == "cuda:1"


def test_missing_data_file_and_required_path(tmp_path):
    assert problems({"data": {"kind": "text"}, "model": {"kind": "gpt"}}) == [
        "data.path: required for data kind 'text'"]
    (p,) = problems({"data": {"kind": "npz", "path": str(tmp_path / "nope.npz")}})
    assert p == f"data.path: file not found: {tmp_path / 'nope.npz'}"


def test_data_path_is_relative_to_the_spec_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.txt").write_text("hello world " * 100)
    spec = load_spec(write_spec(tmp_path / "sub", {"data": {"kind": "text", "path": "t.txt"},
                                                   "model": {"kind": "gpt"}}))
    assert spec.data.path == str((tmp_path / "sub" / "t.txt").resolve())


def test_bad_yaml_gives_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  kind: digits\n train: [1\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    (p,) = e.value.problems
    assert p.startswith(f"{path}:3:") and "bad YAML" in p


def test_empty_file_missing_file_and_non_mapping(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for name, text in [("empty.yaml", "the file is empty"), ("list.yaml", "expected a mapping"),
                       ("missing.yaml", "file not found")]:
        with pytest.raises(SpecError) as e:
            load_spec(tmp_path / name)
        assert text in e.value.problems[0]


def test_python_tags_are_refused_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert "bad YAML" in e.value.problems[0]
    assert not (tmp_path / "pwned").exists()


def test_overrides_set_dotted_keys_as_yaml_scalars(tmp_path):
    spec = load_spec(write_spec(tmp_path, {"noise": {"kind": "input"}}),
                     ["noise.factor=0.05", "train.epochs=5", "model.hidden=[8, 8]", "train.lr=1e-4",
                      "name=other"])
    assert spec.noise[0].factor == 0.05 and spec.train.epochs == 5 and spec.model.hidden == [8, 8]
    assert spec.train.lr == 1e-4 and spec.name == "other"


def test_overrides_on_a_noise_list_need_an_index():
    raw = {"noise": [{"kind": "input"}, {"kind": "none"}]}
    assert apply_overrides(raw, ["noise.0.factor=0.2"])["noise"][0]["factor"] == 0.2
    with pytest.raises(SpecError) as e:
        apply_overrides(raw, ["noise.factor=0.2"])
    assert "noise is a list of 2" in e.value.problems[0]


@pytest.mark.parametrize("text,message", [
    ("noise.factor", "must be in the form key=value"),
    ("=3", "must be in the form key=value"),
    ("a..b=3", "must be in the form key=value"),
    ("seed.x=1", "seed is not a section"),
])
def test_malformed_overrides(text, message):
    with pytest.raises(SpecError) as e:
        apply_overrides({"seed": 0}, [text])
    assert message in e.value.problems[0]


def test_override_typo_is_caught_by_validation(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(write_spec(tmp_path, {}), ["train.epoch=3"])
    assert e.value.problems == ["train.epoch: unknown key; did you mean 'epochs'?"]


def test_resolved_spec_round_trips_and_drops_other_kinds_options():
    spec = spec_from_dict({"name": "x", "data": {"kind": "teacher", "n_classes": 3}, "model": {"kind": "mlp"},
                           "noise": [{"kind": "input", "factor": 0.2}]})
    d = spec_to_dict(spec)
    assert "block_size" not in d["data"] and "n_layer" not in d["model"]
    assert d["noise"]["kind"] == "input"
    again = spec_from_dict(d)
    assert again == spec and isinstance(again, Spec)
    assert flatten(d)["noise.factor"] == 0.2
