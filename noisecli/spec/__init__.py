"""The experiment spec: typed dataclasses, YAML loading, KEY=VALUE overrides, validation.

Validation collects every problem, each on one line that starts with the key's dotted
path, and raises once (`SpecError`). Nothing here imports torch.

The package's modules import one another in one direction only, from the bottom up:

    sections   the dataclasses (every key's default, range and help) and the noise label
    rules      rules across keys of train, data and eval, and `suggest` (sections)
    raw        the raw mapping: YAML read within limits, KEY=VALUE overrides (sections, rules)
    resolved   the resolved spec as a mapping: written, read back, compared (sections, raw)
    init_source  model.init's run folder found and its checkpoint hashed (raw, rules)
    build      validation of a raw mapping into a Spec (sections, raw, rules, init_source)
    load       load_spec and is_sweep_file (sections, raw, build)

Everything the rest of noisecli uses is imported here, so `from noisecli.spec import X`
names it whichever module holds it.
"""

from noisecli.spec.build import DEVICE_RE, FLOAT_RE, INT_MAX, NAME_RE, spec_from_dict
from noisecli.spec.rules import suggest
from noisecli.spec.load import is_sweep_file, load_spec
from noisecli.spec.raw import (MAX_DEPTH, MAX_SPEC_BYTES, MAX_VALUES, YAML11_WORDS, HubName, SpecLoader,
                               apply_overrides, load_yaml, local_or_name, parse_override, read_yaml, remove_dotted,
                               set_dotted)
from noisecli.spec.resolved import (canonical, dump_yaml, flatten, read_saved_spec, spec_diff, spec_to_dict,
                                    upgrade_saved, without_none_factor)
from noisecli.spec.sections import (KIND_SECTIONS, SECTIONS, SEED_MAX, SPEC_KEYS, DataSpec, KindSection, ModelSpec,
                                    NoiseSpec, OutputSpec, Spec, TrainSpec, _public_fields, noise_entries,
                                    noise_label, noise_parts, opt)

__all__ = [
    # sections
    "KIND_SECTIONS", "SECTIONS", "SEED_MAX", "SPEC_KEYS", "DataSpec", "KindSection", "ModelSpec", "NoiseSpec",
    "OutputSpec", "Spec", "TrainSpec", "_public_fields", "noise_entries", "noise_label", "noise_parts", "opt",
    # raw
    "MAX_DEPTH", "MAX_SPEC_BYTES", "MAX_VALUES", "YAML11_WORDS", "HubName", "SpecLoader", "apply_overrides",
    "load_yaml", "local_or_name", "parse_override", "read_yaml", "remove_dotted", "set_dotted",
    # resolved
    "canonical", "dump_yaml", "flatten", "read_saved_spec", "spec_diff", "spec_to_dict", "upgrade_saved",
    "without_none_factor",
    # build
    "DEVICE_RE", "FLOAT_RE", "INT_MAX", "NAME_RE", "spec_from_dict", "suggest",
    # load
    "is_sweep_file", "load_spec",
]
