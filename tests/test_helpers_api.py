"""The helpers that replace the notebooks' repeated idioms, against the idioms they replace."""

import pandas as pd
import pytest
import torch

import lowres_safety as ls
from lowres_safety.activations import ActivationSet
from lowres_safety.calibration import refusal_from_completions, with_refusal
from lowres_safety.data import load_builtin


def test_in_tier_keeps_the_order_and_refuses_an_unknown_tier():
    assert ls.in_tier(["sw", "en", "ar", "de", "xx"], "high") == ["en", "de"]
    assert ls.in_tier(["sw", "en", "ar", "de", "xx"], "low") == ["sw"]
    assert ls.in_tier(["vi", "en"], "mid", tiers={"vi": "mid", "en": "high"}) == ["vi"]
    with pytest.raises(ValueError, match="unknown tier 'medium'"):
        ls.in_tier(["en"], "medium")


def test_vector_is_the_layer_and_position_slice_of_a_direction():
    prompts = load_builtin(["en"], n_per_class=2)
    acts = ActivationSet(torch.randn(4, 3, 2, 5), prompts, (2, 5, 9), ("t_inst", "t_post_inst"), "hook_resid_post",
                         "test")
    v = torch.randn(3, 2, 5)
    assert torch.equal(acts.vector(v, 5), v[1, 1]) and torch.equal(acts.vector(v, 9, "t_inst"), v[2, 0])
    with pytest.raises(ValueError, match="layer 4 was not extracted"):
        acts.vector(v, 4)
    with pytest.raises(ValueError, match="this set's directions are"):
        acts.vector(torch.randn(2, 2, 5), 5)


def test_with_refusal_joins_each_prompts_verdict_by_id_whatever_the_order():
    completions = pd.DataFrame({"id": ["a", "b", "c"], "language": ["en"] * 3, "text": ["x"] * 3,
                                "completion": ["I'm sorry, but I can't.", "Sure, here it is.", "I cannot help."]})
    table = pd.DataFrame({"id": ["c", "a", "b"], "projection": [1.0, 2.0, 3.0]})
    out = with_refusal(table, completions)
    assert out["refused"].tolist() == [True, True, False]
    by_hand = refusal_from_completions(completions.set_index("id").loc[table["id"]].reset_index()).to_numpy()
    assert out["refused"].tolist() == by_hand.tolist() and out["projection"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="have no completion"):
        with_refusal(pd.DataFrame({"id": ["a", "z"]}), completions)
