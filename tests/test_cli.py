"""validate, list, --help, and the promise that they never pay for importing torch."""

import subprocess
import sys

from tests.conftest import ROOT, run_process, write_spec


def test_validate_ok_and_bad(cli, tiny_spec, tmp_path):
    code, out, _ = cli("validate", tiny_spec)
    assert code == 0 and out.startswith(f"ok: {tiny_spec} (run 'tiny': data digits, model mlp, noise input)")
    code, out, _ = cli("validate", tiny_spec, "--show")
    assert "factor: 0.3" in out and "epochs: 3" in out
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


def test_readme_documents_every_spec_key_and_every_kind():
    from dataclasses import fields

    from noisecli.catalog import DATASETS, MODELS, NOISE
    from noisecli.spec import DataSpec, ModelSpec, NoiseSpec, OutputSpec, Spec, TrainSpec

    readme = (ROOT / "README.md").read_text()
    sections = {"": Spec, "data.": DataSpec, "model.": ModelSpec, "noise.": NoiseSpec, "train.": TrainSpec,
                "output.": OutputSpec}
    for prefix, cls in sections.items():
        for f in fields(cls):
            if cls is Spec and f.name in ("data", "model", "noise", "train", "output"):
                continue
            assert f"| `{prefix}{f.name}` |" in readme, f"README lacks {prefix}{f.name}"
    for name in [*DATASETS, *MODELS, *NOISE]:
        assert f"`{name}`" in readme, name
