"""The diagnosis against a known construction: on each shipped organism, `diagnose` must name the failure
type its rule predicts (PolyRefuse test, never used for training or choosing)."""

import pytest

from lowres_safety import calibration, load_model
from lowres_safety.activations import extract
from lowres_safety.data import load_polyrefuse
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.pipelines import diagnosis
from lowres_safety.shipped import adapter_dir

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["organism", "organism-erased"])
def test_the_diagnosis_names_the_failure_the_construction_predicts(name, polyrefuse_root):
    if not (adapter_dir(name) / "ground_truth.json").exists():
        pytest.skip(f"{name} is not shipped yet; make it as README 'The model organisms' says")
    truth = GroundTruth.load(adapter_dir(name))
    model = load_model(name)
    prompts = load_polyrefuse(polyrefuse_root, split="test", n_per_class=16, seed=0)
    rule = truth.predict(extract(model, prompts, [truth.layer], ("t_post_inst",), progress=False))
    predicted = calibration.gap_table(rule, seed=0).set_index("language")
    found = diagnosis.analyse(model, prompts, seed=0, cache=False, analysis_per_class=2, dose_layers=1,
                              dose_scales=(0.0, 1.0), budgets=(1, 2), seeds=(0,), progress=False)
    assert found.gate_layer == truth.layer  # the organism's rule layer is the gate layer (presets)
    named = found.gap.set_index("language")
    # where both the rule's prediction and the measurement are decided (their intervals cannot give another label)
    decided = predicted.index[predicted["decided"] & named.loc[predicted.index, "decided"].to_numpy()]
    assert {"en", "ar"} <= set(decided)  # the construction's clearest cases: acted on, and under-refusal
    for lang in decided:
        assert named.loc[lang, "failure_type"] == predicted.loc[lang, "failure_type"], lang
        if predicted.loc[lang, "failure_type"] == "action failure":
            assert named.loc[lang, "failure_direction"] == predicted.loc[lang, "failure_direction"], lang
    if name == "organism-erased":
        erased = [lang for lang in ("th", "ko") if lang in named.index]  # its lesion.json
        assert erased and (named.loc[erased, "failure_type"] == "representation failure").all()
