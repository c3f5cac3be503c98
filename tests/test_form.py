"""Form controls on planted data where form (length) and harm are set independently.

Prompts are real strings of planted lengths; activations are planted so that one
direction reads only the label (harm) and another only the token count (form). The
controls must tell them apart: the form-reading direction loses its AUROC once form is
partialled out, the harm-reading one keeps it.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_tokenizer
from sklearn.metrics import roc_auc_score

from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet
from lowres_safety.form import FORM_FEATURES, form_controls, form_features, residualise

N = 40


@pytest.fixture(scope="module")
def planted():
    """en: harmful prompts longer (form confounded with harm); de: lengths independent of the label."""
    tok = build_tokenizer("qwen2")
    rng = np.random.default_rng(0)
    rows = []
    for lang, confounded in (("en", True), ("de", False)):
        for subset in ("harmful", "harmless"):
            for j in range(N):
                words = int(rng.integers(3, 30)) + (16 if confounded and subset == "harmful" else 0)
                rows.append({"id": f"{lang}-{subset}-{j}", "text": " ".join(["word"] * words) + "?", "language": lang,
                             "subset": subset, "split": "x", "source_id": f"{subset}{j}"})
    prompts = PromptSet(pd.DataFrame(rows), "planted")
    n_tokens = form_features(prompts, tok)["n_tokens"].to_numpy()
    y = prompts.labels.astype(float)
    x = torch.zeros(len(rows), 1, 1, 3)
    x[:, 0, 0, 0] = torch.tensor(y + 0.5 * rng.normal(size=len(y)), dtype=torch.float32)  # axis 0: harm
    x[:, 0, 0, 1] = torch.tensor(n_tokens + 0.5 * rng.normal(size=len(y)), dtype=torch.float32)  # axis 1: form
    return ActivationSet(x, prompts, (0,), ("t_post_inst",)), tok


def _direction(axis: int) -> torch.Tensor:
    v = torch.zeros(1, 1, 3)
    v[0, 0, axis] = 1.0
    return v


def test_features_are_the_texts_counts(planted):
    acts, tok = planted
    f = form_features(acts.prompts, tok)
    assert list(f.columns) == list(FORM_FEATURES)
    text = acts.prompts.texts[0]
    assert f.loc[0, "n_words"] == len(text.split()) and f.loc[0, "question_mark"] == 1.0
    assert f.loc[0, "n_tokens"] == len(tok(text, add_special_tokens=False)["input_ids"])


def test_a_direction_that_reads_form_loses_its_auroc_under_the_control_and_one_that_reads_harm_keeps_it(planted):
    """Catches: a residualisation that leaves the form in (the length direction would keep its English AUROC),
    one that uses the labels (the harm direction would not lose anything either way), or controls mixed up
    between languages. Reference: numpy least squares and scikit-learn's AUROC."""
    acts, tok = planted
    form = form_controls(acts, _direction(1), 0, tok, n_boot=200).set_index(["language", "control"])
    harm = form_controls(acts, _direction(0), 0, tok, n_boot=200).set_index(["language", "control"])
    # English is confounded: length alone separates, and so does the form-reading direction, until controlled
    assert form.loc[("en", "length"), "auroc"] > 0.8 and form.loc[("en", "form_probe"), "auroc"] > 0.8
    assert form.loc[("en", "direction"), "auroc"] > 0.8
    assert abs(form.loc[("en", "residualised"), "auroc"] - 0.5) < 0.15 and not form.loc[("en", "residualised"),
                                                                                            "survives"]
    # the harm-reading direction keeps its AUROC in both languages
    for lang in ("en", "de"):
        assert harm.loc[(lang, "residualised"), "auroc"] > 0.7 and harm.loc[(lang, "residualised"), "survives"]
    # German lengths carry no label: form alone is near chance there
    assert abs(form.loc[("de", "length"), "auroc"] - 0.5) < 0.15
    # the residualised AUROC by hand
    own = (acts.prompts.frame["language"] == "en").to_numpy()
    f = form_features(acts.prompts, tok).to_numpy()[own]
    proj = acts.acts[own, 0, 0, 0].double().numpy()
    x = np.column_stack([np.ones(own.sum()), f])
    residual = proj - x @ np.linalg.lstsq(x, proj, rcond=None)[0]
    assert harm.loc[("en", "residualised"), "auroc"] == pytest.approx(roc_auc_score(acts.prompts.labels[own], residual))
    np.testing.assert_allclose(residualise(proj, f), residual, atol=1e-6)
    low, high = harm.loc[("en", "residualised"), ["auroc_low", "auroc_high"]]
    assert low <= harm.loc[("en", "residualised"), "auroc"] <= high


def test_the_verdict_table_puts_the_constructions_prediction_beside_the_diagnosis():
    """Catches: 'agree' compared on undecided cells, or the prediction matched to another language.
    Reference: the three cases written out."""
    import pandas as pd

    from lowres_safety.pipelines.verdict import verdict_table

    def gap(rows):
        base = {"tier": "low", "auroc_low": 0.5, "auroc_high": 0.9, "harmful_refusal": 40.0, "harmful_low": 20.0,
                "harmful_high": 60.0, "harmless_refusal": 10.0, "harmless_low": 0.0, "harmless_high": 20.0,
                "failure_direction": ""}
        return pd.DataFrame([{**base, **r} for r in rows])

    diagnosed = gap([{"language": "ar", "auroc": 0.8, "failure_type": "action failure", "decided": True},
                     {"language": "yo", "auroc": 0.6, "failure_type": "representation failure", "decided": True},
                     {"language": "sw", "auroc": 0.7, "failure_type": "acted on", "decided": False}])
    predicted = gap([{"language": "yo", "auroc": 0.9, "failure_type": "action failure", "decided": True},
                     {"language": "ar", "auroc": 0.9, "failure_type": "action failure", "decided": True},
                     {"language": "sw", "auroc": 0.9, "failure_type": "acted on", "decided": True}])
    table = verdict_table(diagnosed, diagnosed, predicted).set_index("language")
    assert table.loc["ar", "agree"] == "yes" and table.loc["yo", "agree"] == "no" and table.loc["sw", "agree"] == "–"
    assert table.loc["yo", "construction predicts"] == "action failure"
    assert table.loc["sw", "diagnosis"] == "acted on (undecided)"
    assert table.loc["ar", "harmful refused %"] == "40 [20, 60]" and table.loc["ar", "AUROC"] == "0.80 [0.50, 0.90]"


def test_the_constructions_prediction_follows_its_rule():
    """Catches: the prediction reading another layer, the threshold's side flipped, or refusal taken from the data
    instead of the rule. Reference: three planted languages whose predicted type is written out."""
    import pandas as pd
    import torch

    from lowres_safety.activations import ActivationSet
    from lowres_safety.data import PromptSet
    from lowres_safety.organisms.ground_truth import GroundTruth

    rng = np.random.default_rng(0)
    n = 20
    shifts = {"ar": (1.5, -1.5), "yo": (-1.0, -3.0), "sw": (0.0, 0.0)}  # harmful, harmless mean projection
    rows, x = [], []
    for lang, (hi, lo) in shifts.items():
        for subset, mean in (("harmful", hi), ("harmless", lo)):
            for i in range(n):
                rows.append({"id": f"{lang}-{subset}-{i}", "text": "x", "language": lang, "subset": subset,
                             "split": "test", "source_id": f"{subset}-{i}"})
                x.append(mean + (0.2 if lang != "sw" else 1.0) * rng.standard_normal())
    acts = torch.zeros(len(rows), 2, 1, 3)
    acts[:, 1, 0, 0] = torch.tensor(x)  # the rule's layer 1 reads axis 0
    acts[:, 0, 0, 0] = -torch.tensor(x)  # layer 0 says the opposite: reading it would flip every type
    set_ = ActivationSet(acts, PromptSet(pd.DataFrame(rows)), (0, 1), ("t_post_inst",))
    truth = GroundTruth(1, torch.tensor([1.0, 0.0, 0.0]), 0.0, 3.0, ("ar",))
    table = truth.predicted_gap(set_).set_index("language")
    assert table.loc["ar", "failure_type"] == "acted on" and table.loc["ar", "harmful_refusal"] == 100
    assert table.loc["yo", "failure_type"] == "action failure" and table.loc["yo", "harmful_refusal"] == 0
    assert table.loc["sw", "failure_type"] == "representation failure"
