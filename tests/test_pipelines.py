"""The experiments as library calls: typed configs checked once, saved into results, and repeatable from them."""

import json
import re
from typing import get_args

import pytest
from helpers import save_chat_model

import lowres_safety as ls
from lowres_safety.cli import main
from lowres_safety.data.prompt_files import FileOptions
from lowres_safety.pipelines import DiagnoseConfig, SteerConfig
from lowres_safety.pipelines.config import Ablation, AdaptedFrom, CalibrateOn, Recalibration, Scope, check_choice


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random chat model saved as a local folder (mechanics, not numbers)."""
    return str(save_chat_model(tmp_path_factory.mktemp("tiny-chat"), "llama", num_hidden_layers=4))


@pytest.mark.parametrize("config", [
    DiagnoseConfig(languages=("en", "sw"), n_per_class=3, tiers={"vi": "mid"}),
    SteerConfig(model="default", languages=("de", "yo"), ks=(0, 2), scope="all", strength=0.5,
                files=None),
])
def test_a_config_survives_its_own_json(config):
    text = json.dumps({"config": config.to_dict()})
    again = type(config).from_dict(json.loads(text)["config"])
    assert again == config


def test_file_options_survive_the_json_too(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,lang,label\nSteal a car.,en,harmful\n")
    config = DiagnoseConfig(data=str(path), files=FileOptions(text="prompt", language="lang", label="label",
                                                              harmful_values=("harmful", "1")))
    assert DiagnoseConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("field, kind", [("scope", Scope), ("ablation", Ablation), ("recalibration", Recalibration),
                                         ("calibrate_on", CalibrateOn), ("adapted_from", AdaptedFrom)])
def test_a_string_option_outside_its_literal_is_refused(field, kind):
    """Refused when the config is built; under pytest the annotation itself is checked first (jaxtyping's hook)."""
    with pytest.raises((ValueError, TypeError)):
        SteerConfig(**{field: "everywhere"})
    with pytest.raises(ValueError, match=re.escape(f"{field} must be one of {list(get_args(kind))}, got 'everywhere'")):
        check_choice(field, "everywhere", kind)
    check_choice(field, get_args(kind)[-1], kind)


@pytest.mark.parametrize("make, message", [
    (lambda: SteerConfig(ks=(0, 33)), "up to n_fit 32"),
    (lambda: SteerConfig(strength=float("nan")), "strength must be positive and finite"),
    (lambda: SteerConfig(layer=30), "layer 30: this model has layers 0..29"),
    (lambda: DiagnoseConfig(n_per_class=1), "n_per_class 1: must be at least 2"),
    (lambda: DiagnoseConfig(probe_folds=1), "probe_folds 1: must be at least 2"),
    (lambda: DiagnoseConfig(languages=("en", "en")), r"languages names \['en'\] more than once"),
    (lambda: DiagnoseConfig(tiers={"sw": "high"}), "'sw' is 'low' in the paper's table"),
    (lambda: DiagnoseConfig(data="nowhere.csv"), "no such file or folder"),
    (lambda: DiagnoseConfig.from_dict({"n_per_class": 4, "scope": "all"}), r"has no option\(s\) \['scope'\]"),
    (lambda: SteerConfig(adasteer_vectors="nowhere"), "adasteer_vectors 'nowhere': no RD/ folder there"),
])
def test_every_option_is_checked_when_the_config_is_built(make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        make()


def test_the_configs_and_runs_are_one_call_from_the_package():
    assert ls.DiagnoseConfig is DiagnoseConfig and ls.SteerConfig is SteerConfig
    assert callable(ls.diagnose) and callable(ls.steer)


def _without_timing(path):
    results = json.loads(path.read_text())
    results.pop("timing")
    return results


def test_the_library_call_is_what_the_command_runs_and_its_config_repeats_it_bit_for_bit(tmp_path, tiny):
    """Catches: a setting left out of the saved config (the repeat draws other prompts or another seed), or a CLI
    that does more than build the config and call the library."""
    config = DiagnoseConfig(model=tiny, languages=("en", "sw"), n_per_class=3, max_new_tokens=2,
                            analysis_per_class=2, cache=False, seed=3)
    result = ls.diagnose(config, progress=False)
    assert list(result.gap["language"]) == ["en", "sw"]
    result.save(tmp_path / "lib")
    saved = json.loads((tmp_path / "lib" / "results.json").read_text())["config"]
    assert saved["model"] == tiny and saved["seed"] == 3 and saved["languages"] == ["en", "sw"]
    assert main(["diagnose", "--config", str(tmp_path / "lib" / "results.json"), "--out", str(tmp_path / "cli")]) == 0
    assert _without_timing(tmp_path / "cli" / "results.json") == _without_timing(tmp_path / "lib" / "results.json")
