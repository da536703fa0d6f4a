"""`noisecli init` and the examples it ships, `list examples`, click's own mistakes as one line,
shell completion, the help's usage lines, and docs/commands.md against the commands' options."""

import tomllib
from fnmatch import fnmatch

import pytest
import typer
from typer.testing import CliRunner

from noisecli.cli import app
from noisecli.examples import EXAMPLES, FILES
from tests.conftest import ROOT, metrics_rows, run_process

EXPERIMENTS = ROOT / "experiments"


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


# ---------------------------------------------------------------- the examples in the package


def test_the_packaged_examples_are_experiments_byte_for_byte_and_each_belongs_to_an_example():
    assert tree(FILES) == tree(EXPERIMENTS), "copy experiments/ into noisecli/example_files/ (or the other way)"
    for name in tree(EXPERIMENTS):
        assert (FILES / name).read_bytes() == (EXPERIMENTS / name).read_bytes(), name
    named = [f for e in EXAMPLES.values() for f in e.files]
    assert sorted(set(named)) == tree(FILES)  # no file shipped that no example copies, none named that is missing
    for e in EXAMPLES.values():  # the spec first, its first line the command that runs it
        header = (FILES / e.files[0]).read_text().splitlines()[0]
        assert e.files[0].endswith(".yaml") and header.startswith("# noisecli ") and f"experiments/{e.files[0]}" in header


def test_pyproject_ships_every_example_file_and_the_license():
    """The wheel takes package data by these globs; a new file or folder they miss would be left out
    of `pip install noisecli` (the wheel itself is built in the report's verification)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["noisecli.example_files"]
    assert all(any(fnmatch(name, g) and name.count("/") == g.count("/") for g in globs) for name in tree(FILES))
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the noisecli authors\n") and "WITHOUT WARRANTY" in text


# ---------------------------------------------------------------- init


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_init_copies_an_example_whose_spec_validates_where_it_lands(cli, tmp_path, name):
    folder = tmp_path / "new" / name  # made, with its parents
    code, out, err = cli("init", name, folder)
    assert code == 0, err
    example = EXAMPLES[name]
    assert tree(folder) == sorted(example.files)
    assert all((folder / f).read_bytes() == (FILES / f).read_bytes() for f in example.files)
    assert out.splitlines()[0] == f"copied example {name} to {folder}: {', '.join(example.files)}"
    assert out.splitlines()[1].startswith("run it: noisecli ") and f"{folder / example.files[0]}" in out
    assert "experiments/" not in out.splitlines()[1]  # every spec the command names points at the copy
    overrides = []
    if name == "shakespeare-char":  # the text is not shipped: the header says to point data.path at it
        (tmp_path / "tiny.txt").write_text("To be, or not to be, that is the question. " * 400)
        overrides = [f"data.path={tmp_path / 'tiny.txt'}"]
    code, out, err = cli("validate", folder / example.files[0], *overrides)
    assert code == 0, err  # model and data paths resolve from the spec's new folder
    assert out.startswith(f"ok: {folder / example.files[0]}")


def test_init_your_model_resolves_its_python_target_from_the_new_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # elsewhere than the spec's folder: the target is relative to the spec
    code, _, err = cli("init", "your-model", "mine")
    assert code == 0, err
    code, out, err = cli("validate", "mine/python-model.yaml", "--show")
    assert code == 0, err
    assert f"target: {tmp_path / 'mine' / 'my_model.py'}:residual_mlp" in out and "code_sha256: " in out
    (tmp_path / "mine" / "my_model.py").rename(tmp_path / "my_model.py")  # beside the current folder, not the spec
    code, _, err = cli("validate", "mine/python-model.yaml")
    assert (code, err) == (2, f"error: model.target: file not found: {tmp_path / 'mine' / 'my_model.py'}\n")


def test_init_quickstart_into_a_folder_then_train_there(cli, tmp_path, monkeypatch):
    code, out, err = cli("init", "quickstart", tmp_path / "x")
    assert code == 0, err
    monkeypatch.chdir(tmp_path / "x")
    code, out, err = cli("train", "quickstart.yaml", "train.max_steps=5", "--device", "cpu", "-q")
    assert code == 0, err
    rows = metrics_rows(tmp_path / "x" / "runs" / "quickstart")
    assert rows[-1]["step"] == 5


def test_init_here_by_default_and_says_the_command_that_runs_it(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("init", "sft-neftune")
    assert code == 0, err
    assert out == ("copied example sft-neftune here: sft-neftune-sweep.yaml, make_instructions.py, "
                   "data/instructions.jsonl\n"
                   "run it: noisecli sweep sft-neftune-sweep.yaml && noisecli report runs/sft-neftune-sweep\n")
    assert tree(tmp_path) == ["data/instructions.jsonl", "make_instructions.py", "sft-neftune-sweep.yaml"]


def test_init_refuses_to_overwrite_and_copies_nothing(cli, tmp_path):
    folder = tmp_path / "x"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "instructions.jsonl").write_text("mine\n")
    code, out, err = cli("init", "sft-neftune", folder)
    assert (code, out) == (2, "")
    assert err == (f"error: init: {folder / 'data' / 'instructions.jsonl'} already exists; nothing was copied "
                   "(move it away, or choose another folder: noisecli init NAME DIR)\n")
    assert tree(folder) == ["data/instructions.jsonl"]  # the other two files were checked, and not copied
    assert (folder / "data" / "instructions.jsonl").read_text() == "mine\n"
    (folder / "sft-neftune-sweep.yaml").write_text("mine\n")  # every file in the way is named, in one line
    code, _, err = cli("init", "sft-neftune", folder)
    assert code == 2 and len(err.splitlines()) == 1 and "sft-neftune-sweep.yaml, " in err and "already exist;" in err


def test_init_refuses_a_file_where_a_folder_must_be(cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("init", "quickstart", tmp_path / "afile")
    assert (code, err) == (2, f"error: init: {tmp_path / 'afile'} is a file, not a folder\n")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "data").write_text("x")  # sft-neftune needs y/data/ to be a folder
    code, _, err = cli("init", "sft-neftune", tmp_path / "y")
    assert code == 2 and err.startswith(f"error: init: {tmp_path / 'y' / 'data'}: a file where the example needs")
    assert tree(tmp_path / "y") == ["data"]


def test_init_copies_nothing_when_a_write_fails_part_way(cli, tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def full_disk(path, mode="r", *a, **kw):
        if "w" in mode and "instructions.jsonl" in str(path):  # atomic_write's temporary file beside it
            raise OSError(28, "No space left on device")  # a full disk names no file: atomic_write adds it
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", full_disk)
    code, _, err = cli("init", "sft-neftune", tmp_path / "z")
    assert code == 1 and err == f"error: {tmp_path / 'z' / 'data' / 'instructions.jsonl'}: No space left on device\n"
    assert not (tmp_path / "z").exists()  # the two files already copied, and the folders made, are gone


@pytest.mark.parametrize("args, line", [
    ([], "error: init: name an example: quickstart, your-model, sft-neftune, pretrain-then-lora, findings-digits-mlp, findings-pydoc-gpt, "
         "study-regularizers-digits, study-regularizers-pydoc, tune, teacher-sweep, pydoc-gpt, pydoc-hf, shakespeare-char (noisecli list examples)"),
    (["quickstrat"], "error: init: unknown example 'quickstrat'; did you mean 'quickstart'? (noisecli list examples)"),
    (["tunes"], "error: init: unknown example 'tunes'; did you mean 'tune'? (noisecli list examples)"),
])
def test_init_an_unknown_or_missing_example_is_one_line(cli, tmp_path, monkeypatch, args, line):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("init", *args)
    assert (code, out, err) == (2, "", line + "\n")
    assert not list(tmp_path.iterdir())


def test_list_examples_one_line_each_and_list_all_ends_with_them(cli):
    code, out, _ = cli("list", "examples")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("examples:") and len(lines) == 1 + len(EXAMPLES)
    for line, e in zip(lines[1:], EXAMPLES.values()):
        assert line.split()[0] == e.name and e.summary in line and line.endswith(f"(files: {', '.join(e.files)})")
    code, everything, _ = cli("list")
    assert code == 0 and everything.endswith(out) and everything.startswith("datasets:")
    code, _, err = cli("list", "exampels")
    assert (code, err) == (2, "error: list: unknown 'exampels'; did you mean 'examples'?; "
                              "choose models, datasets, noise, regularizers or examples\n")


# ---------------------------------------------------------------- click's mistakes, one line


@pytest.mark.parametrize("args, line", [
    (["train", "x.yaml", "--devise", "cpu"], "error: no such option: --devise (did you mean --device?)"),
    (["sweep", "s.yaml", "--jobs", "0"], "error: invalid value for '--jobs' / '-j': "),
    (["report", "runs", "-f", "pdf"], "error: invalid value for '--format' / '-f': 'pdf' is not one of 'table', "),
    (["eval", "runs/x", "--split", "tset"], "error: invalid value for '--split': 'tset' is not one of "),
    (["validate"], "error: missing argument 'SPEC'"),
    (["list", "noise", "models"], "error: got unexpected extra argument(s) (models)"),
    (["init", "quickstart", "d", "e"], "error: got unexpected extra argument(s) (e)"),
    (["trian", "x.yaml"], "error: no such command 'trian'; did you mean 'train'?"),
    (["--verison"], "error: no such option: --verison (did you mean --version?)"),
])
def test_a_mistake_click_finds_is_one_error_line_and_exit_2(cli, args, line):
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert "Usage:" not in err and "Error:" not in err and not err.rstrip().endswith(".")


def test_the_console_script_says_it_in_one_line_too(tmp_path):
    done = run_process("train", "x.yaml", "--devise", "cpu", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "error: no such option: --devise (did you mean "
                                                                  "--device?)\n")


def test_help_version_and_our_own_exit_codes_are_unchanged(cli, tiny_spec, tmp_path):
    for args in (["--help"], ["train", "--help"], ["init", "-h"], ["--version"]):
        code, out, err = cli(*args)
        assert code == 0 and out and not err, args
    code, _, err = cli("validate", tmp_path / "missing.yaml")  # a typer.Exit(2) from exit_codes passes through
    assert code == 2 and err.startswith("error: ")
    code, _, err = cli()  # bare `noisecli`: the help, as click shows it, exit 2
    assert code == 2 and "Commands:" in err


# ---------------------------------------------------------------- completion and help texts


def complete(words: str, cword: int) -> list[str]:
    result = CliRunner().invoke(app, [], env={"_NOISECLI_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                              "COMP_CWORD": str(cword)}, prog_name="noisecli")
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_shell_completion_of_list_and_init():
    assert complete("noisecli list ", 2) == ["models", "datasets", "noise", "regularizers", "examples"]
    assert complete("noisecli list n", 2) == ["noise"]
    assert complete("noisecli init ", 2) == list(EXAMPLES)
    assert complete("noisecli init find", 2) == ["findings-digits-mlp", "findings-pydoc-gpt"]
    assert complete("noisecli report -f ", 3) == ["table", "md", "csv", "json", "html"]


def test_shell_completion_of_override_keys_after_a_spec():
    noise = complete("noisecli train spec.yaml noise.fa", 3)
    assert noise == ["noise.factor="]
    train = complete("noisecli sweep s.yaml train.epochs=3 train.grad", 4)
    assert train == ["train.grad_accum=", "train.grad_clip="]
    assert "model.lora=" in complete("noisecli validate s.yaml model.l", 3)  # a kind's option (hf, gpt)
    assert "data.tokenizer=" in complete("noisecli train s.yaml data.t", 3)
    assert complete("noisecli train s.yaml noise.factor=0", 3) == []  # values are not guessed


def test_zsh_completion_of_init_shows_each_examples_summary():
    result = CliRunner().invoke(app, [], env={"_NOISECLI_COMPLETE": "complete_zsh",
                                              "_TYPER_COMPLETE_ARGS": "noisecli init quick"}, prog_name="noisecli")
    assert result.exit_code == 0 and '"quickstart":"an MLP memorizes 300 digits' in result.stdout


def test_usage_lines_read_as_click_writes_them_and_choices_are_listed_once(cli):
    # "Usage: PROG COMMAND ...": the words after the program's name (CliRunner calls it root)
    usage = {name: cli(name, "--help")[1].splitlines()[0].split(" ", 2)[2]
             for name in typer.main.get_command(app).commands}
    assert usage["train"] == "train [OPTIONS] SPEC [KEY=VALUE]..."
    assert usage["sweep"] == "sweep [OPTIONS] SWEEP_SPEC [KEY=VALUE]..."
    assert usage["list"] == "list [OPTIONS] [models|datasets|noise|regularizers|examples]"
    assert usage["init"] == "init [OPTIONS] [EXAMPLE] [DIR]"
    assert not [u for u in usage.values() if "{" in u or "[[" in u]
    _, report_help, _ = cli("report", "--help")
    assert report_help.count("csv") == 1  # once, in -f's <table|md|csv|json|html>
    assert "svg | pdf" not in report_help  # --figure-format's <svg|pdf|png> says them
    _, list_help, _ = cli("list", "--help")
    assert list_help.count("noise|") == 2 and "| noise" not in list_help  # usage line and name, not the help too


# ---------------------------------------------------------------- docs/commands.md against the code


def test_commands_md_names_every_command_and_every_option():
    text = (ROOT / "docs" / "commands.md").read_text()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"`noisecli {name}" in text, name
        for param in command.params:
            for opt in (o for o in param.opts if o.startswith("--") and o != "--help"):
                assert f"`{opt}" in text, f"{name} {opt}"


def test_a_tune_spec_given_to_train_or_sweep_names_the_command_that_runs_it(cli, tmp_path):
    spec = ROOT / "experiments" / "tune-digits.yaml"
    for command in ("train", "sweep"):
        code, out, err = cli(command, spec, "--runs-dir", tmp_path / "runs")
        assert (code, out, err.strip()) == (2, "", f"error: {spec}: a tune spec (it has `search:`); run it with: "
                                                   f"noisecli tune {spec}")
    assert not (tmp_path / "runs").exists()
    code, out, _ = cli("validate", spec)
    assert (code, out) == (0, f"ok: {spec} (tune 'digits-tune')\n")
