"""`noisecli export`: an hf run's checkpoint as a transformers folder (save_pretrained, safetensors).

The model is rebuilt from the run folder's resolved spec and the checkpoint loaded into it as
`noisecli eval` loads it (evaluate.restore: the weights evaluation saw, Anti-PGD's clean
point), so the folder evaluates to the logged numbers. The tokenizer named by `data.tokenizer`
is saved beside the weights. A LoRA run gives, with `merge`, a plain model (peft's
merge_and_unload); without it, peft's adapter folder (adapter_config.json,
adapter_model.safetensors) with the frozen base it was trained on in `base/`, the adapter's
`base_model_name_or_path` pointing at that folder, so it loads offline and nothing else is needed.

Nothing half-written: the folder is written under a temporary name next to OUT_DIR and renamed
at the end; any failure removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from noisecli.errors import SpecError
from noisecli.evaluate import restore
from noisecli.hub import import_transformers, load_local
from noisecli.runs import atomic_write
from noisecli.spec import read_saved_spec, spec_from_dict


def export(run_dir: Path, out_dir: Path, merge: bool = False, checkpoint: str = "last") -> str:
    """Write the run's checkpoint to `out_dir` (new or empty); the line that says what was written."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    spec = _run_spec(run_dir)
    lora = spec.model.lora is not None
    if merge and not lora:
        raise SpecError(f"--merge: run {run_dir.name!r} trained no LoRA adapters (model.lora is null); its export "
                        "is a plain model already: leave --merge out")
    _check_out_dir(out_dir)
    trainer, state, path = restore(spec, run_dir, checkpoint)  # torch and transformers: only now
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.export{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # this process's own leftover only (the pid is in the name)
    try:
        with warnings.catch_warnings():  # transformers' and peft's notes while saving are not the user's concern
            warnings.simplefilter("ignore")
            what = _write_model(trainer.raw_model.model, tmp, out_dir, lora, merge)
            tokenizer = _write_tokenizer(spec, tmp)
        if out_dir.is_dir():  # empty: checked above
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return (f"exported run {run_dir.name!r} ({path.name}, step {state.get('step')}) to {out_dir}: {what}"
            f"{tokenizer}; load it with AutoModelForCausalLM.from_pretrained({str(out_dir)!r})")


def _run_spec(run_dir: Path):
    """The run's resolved spec, on the CPU; an hf run's only."""
    if not run_dir.is_dir():
        raise SpecError(f"export: {run_dir}: no such run folder")
    raw = read_saved_spec(run_dir / "spec.yaml")
    if raw is None:
        raise SpecError(f"export: {run_dir}: no readable spec.yaml, so not a noisecli run folder")
    raw["device"] = "cpu"  # the files do not depend on the device, and exporting needs no free GPU
    spec = spec_from_dict(raw, base_dir=run_dir)
    if spec.model.kind != "hf":
        raise SpecError(f"export: run {run_dir.name!r} trained model kind {spec.model.kind!r}; only model.kind "
                        "'hf' runs export to a transformers folder")
    return spec


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"export: {out_dir} exists and is not a folder; name a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise SpecError(f"export: {out_dir} exists and is not empty; name a new (or empty) folder")


def _write_model(model, tmp: Path, out_dir: Path, lora: bool, merge: bool) -> str:
    """The transformers model (a peft model under LoRA) saved into `tmp`; what was written."""
    if lora and not merge:
        model.save_pretrained(str(tmp))  # adapter_config.json, adapter_model.safetensors
        model.unload().save_pretrained(str(tmp / "base"))  # the base without the adapter layers
        config = tmp / "adapter_config.json"
        adapter = json.loads(config.read_text(encoding="utf-8"))
        # absolute: transformers resolves a relative base against the current folder, not this one
        adapter["base_model_name_or_path"] = str((out_dir / "base").resolve())
        atomic_write(config, json.dumps(adapter, indent=2, sort_keys=True))
        return "LoRA adapters (peft) and their base model in base/"
    if lora:
        model = model.merge_and_unload()
    model.save_pretrained(str(tmp))
    return "a transformers model" + (" with the LoRA adapters merged in" if lora else "")


def _write_tokenizer(spec, tmp: Path) -> str:
    if spec.data.tokenizer is None:
        return ""
    tokenizer = load_local(import_transformers("data.tokenizer").AutoTokenizer, spec.data.tokenizer,
                           "data.tokenizer", trust_remote_code=False)
    tokenizer.save_pretrained(str(tmp))
    return " and its tokenizer"
