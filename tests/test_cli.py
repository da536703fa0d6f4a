"""validate, list, --help, and the promise that they never pay for importing torch."""

import subprocess
import sys

from tests.conftest import ROOT, run_process, write_spec


def test_validate_ok_and_bad(cli, tiny_spec, tmp_path):
    code, out, _ = cli("validate", tiny_spec)
    assert code == 0 and out.startswith(f"ok: {tiny_spec} (run 'tiny': data digits, model mlp, noise input 0.3)")
    code, out, _ = cli("validate", tiny_spec, "--show")
    assert "factor: 0.3" in out and "epochs: 3" in out and "test_fraction: 0.2" in out
    assert "# splits: 120 train / 360 val / 359 test examples" in out
    bad = write_spec(tmp_path, {"data": {"kind": "digit"}, "train": {"lr": "x"}}, "bad.yaml")
    code, _, err = cli("validate", bad)
    assert code == 2
    assert err.splitlines() == ["error: train.lr: must be a number, got 'x' (str)",
                                "error: data.kind: unknown dataset 'digit'; did you mean 'digits'? "
                                "(noisecli list datasets)"]


def test_list_shows_every_entry(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name in ["digits", "pydoc", "markov", "npz", "mlp", "cnn", "gpt", "none", "input"]:
        assert name in out
    code, out, _ = cli("list", "noise")
    assert code == 0 and "standard deviation" in out and "digits" not in out
    code, _, err = cli("list", "nosie")
    assert code == 2 and "did you mean 'noise'" in err


def test_help_validate_and_list_do_not_import_torch(tiny_spec):
    probe = ("import sys\nfrom noisecli.cli import app\n"
             "for args in (['--help'], ['validate', sys.argv[1]], ['list']):\n"
             "    try:\n        app(args)\n    except SystemExit as e:\n        assert e.code == 0, (args, e.code)\n"
             "assert 'torch' not in sys.modules, 'torch was imported'\nprint('clean')\n")
    out = subprocess.run([sys.executable, "-c", probe, str(tiny_spec)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


def test_console_script_entry_point_runs(tmp_path):
    proc = run_process("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "train" in proc.stdout and "validate" in proc.stdout


def test_the_reference_in_docs_is_generated_from_the_code():
    """docs/reference.md must be what `python -m noisecli.reference` prints: every key, default
    and meaning come from the dataclasses and the catalog, so code and docs cannot disagree."""
    from noisecli.reference import render

    assert (ROOT / "docs" / "reference.md").read_text() == render(), \
        "docs/reference.md is stale: python -m noisecli.reference > docs/reference.md"


def test_the_reference_names_every_key_and_every_kind():
    from dataclasses import fields

    from noisecli.catalog import TABLES
    from noisecli.reference import render
    from noisecli.spec import SECTIONS, Spec

    text = render()
    for f in fields(Spec):
        if f.name not in ("data", "model", "noise", "train", "output", "eval"):
            assert f"| `{f.name}` |" in text
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if not f.metadata.get("internal"):
                assert f"| `{section}.{f.name}` |" in text, f"{section}.{f.name}"
    for section, table in TABLES.items():
        for entry in table.values():
            assert f"### {section}.kind: `{entry.name}`" in text
            for option in entry.options:
                assert f"| `{section}.{option}` |" in text


def test_version_common_options_and_whole_command_descriptions(cli, tiny_spec, tmp_path):
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert (code, out) == (0, f"noisecli {version('noisecli')}\n")
    code, out, _ = cli("--help")
    commands = out.split("Commands:")[1]
    assert code == 0 and "..." not in commands  # click cuts at 45 characters unless told otherwise
    assert "Check a spec without training: exit 0 if valid, 2 with one line" in " ".join(commands.split())
    # the options the README calls common are accepted where they make sense
    code, out, _ = cli("validate", tiny_spec, "--quiet")
    assert (code, out) == (0, "")
    code, out, err = cli("sweep", tiny_spec, "--seeds", "1", "--device", "cpu", "--runs-dir", tmp_path / "r", "-q")
    assert code == 0, err
    code, out, _ = cli("report", "--runs-dir", tmp_path / "r", "-f", "csv")
    assert code == 0 and out.startswith("noise,factor,n,")
    code, out, _ = cli("eval", "seed-0", "--runs-dir", tmp_path / "r" / "tiny-sweep", "-f", "json")
    assert code == 0 and '"val_loss"' in out
    code, out, _ = cli("train", "--help")
    assert out.splitlines()[0].endswith(" train [OPTIONS] SPEC [KEY=VALUE]...")  # not <list[str]>, not {SPEC}
