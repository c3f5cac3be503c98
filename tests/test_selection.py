"""Direction selection (Arditi et al. 2024): scores against hand computations, the filters and the choice rule."""

import math

import pandas as pd
import pytest
import torch
from helpers import build_model

from lowres_safety import hooks as H
from lowres_safety import plots
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin
from lowres_safety.directions import diff_of_means
from lowres_safety.evaluation import first_token_ids, kl_divergence, refusal_score
from lowres_safety.selection import (
    NoSurvivorError,
    candidate_directions,
    choose,
    filter_candidates,
    score_candidates,
    select_direction,
)

N_LAYERS = 5  # int(5 * 0.8) = 4: refusal_direction prunes resid_pre 4, i.e. our resid_post layers 3 and 4


@pytest.fixture(scope="module")
def tiny():
    return build_model("qwen2", num_hidden_layers=N_LAYERS)


@pytest.fixture(scope="module")
def val():
    prompts = load_builtin(["en"], n_per_class=3)
    return prompts.where(subset="harmful"), prompts.where(subset="harmless")


@pytest.fixture(scope="module")
def tokens(tiny):
    return first_token_ids(tiny.tokenizer, ["I'm sorry", "Sorry", "As an AI"])


def rand(d, seed, scale=3.0):
    return scale * torch.randn(d, generator=torch.Generator().manual_seed(seed))


def test_scores_equal_a_hand_computation(tiny, val, tokens):
    harmful, harmless = val
    r = rand(tiny.cfg.d_model, 1)
    layer = 1
    table = score_candidates(tiny, harmful, harmless, {(layer, "t_post_inst"): r, (2, "t_post_inst"): rand(64, 2)},
                             tokens, batch_size=2, progress=False)
    row = table.set_index("layer").loc[layer]
    ablate = H.ablate(r, range(N_LAYERS))
    bypass = refusal_score(tiny, harmful, tokens, ablate).mean()
    induce = refusal_score(tiny, harmless, tokens, H.add(r, float(r.norm()), layer, scope="all")).mean()
    kl = kl_divergence(tiny, harmless, ablate).mean()
    assert row["bypass_score"] == pytest.approx(float(bypass), abs=1e-4, rel=1e-4)
    assert row["induce_score"] == pytest.approx(float(induce), abs=1e-4, rel=1e-4)
    assert row["kl"] == pytest.approx(float(kl), abs=1e-6, rel=1e-3)
    assert row["baseline_harmful_score"] == pytest.approx(float(refusal_score(tiny, harmful, tokens).mean()), abs=1e-4)
    assert row["resid_pre_layer"] == layer + 1 and row["norm"] == pytest.approx(float(r.norm()))
    # the interventions did something, so equality above is not trivially "nothing happened"
    assert kl > 0 and abs(induce - table["baseline_harmless_score"].iloc[0]) > 1e-3


def test_candidate_directions_are_differences_of_means(tiny):
    prompts = load_builtin(["en"], n_per_class=2)
    acts = extract(tiny, prompts, layers=[0, 2], positions=("t_inst", "t_post_inst"), progress=False)
    cands = candidate_directions(acts)
    assert set(cands) == {(0, "t_inst"), (0, "t_post_inst"), (2, "t_inst"), (2, "t_post_inst")}
    torch.testing.assert_close(cands[(2, "t_inst")], diff_of_means(acts)[1, 0])


def hand_table():
    # 10 layers: refusal_direction prunes resid_pre >= int(10 * 0.8) = 8, i.e. our layers 7, 8, 9
    rows = [  # layer, bypass, induce, kl
        (1, -2.0, 1.0, 0.05),   # survivor
        (2, -9.0, 1.0, 0.50),   # kl > 0.1
        (3, -9.0, -1.0, 0.01),  # induce < 0
        (4, math.nan, 1.0, 0.01),  # nan
        (5, -5.0, 0.5, 0.10),   # survivor (kl == threshold is kept), lowest bypass among survivors
        (6, -3.0, 2.0, 0.02),   # survivor
        (7, -20.0, 3.0, 0.00),  # last 20% (resid_pre 8): the global minimum, must not win
    ]
    return pd.DataFrame([{"layer": l, "position": "t_post_inst", "resid_pre_layer": l + 1, "bypass_score": b,
                          "induce_score": i, "kl": k} for l, b, i, k in rows])


def test_filters_give_each_reason():
    table = filter_candidates(hand_table(), 10).set_index("layer")
    assert table.loc[7, "why"] == "last 20% of layers"
    assert table.loc[2, "why"] == "kl > 0.1"
    assert table.loc[3, "why"] == "induce < 0"
    assert table.loc[4, "why"] == "nan"
    assert not table.loc[[1, 5, 6], "filtered"].any() and table.loc[[2, 3, 4, 7], "filtered"].all()


def test_prune_uses_refusal_directions_resid_pre_index():
    # our resid_post layer 7 is their resid_pre 8 >= int(10 * 0.8): pruned; read at resid_pre, layer 7 is kept
    table = hand_table().assign(resid_pre_layer=lambda t: t["layer"])
    assert not filter_candidates(table, 10).set_index("layer").loc[7, "filtered"]


def test_choice_is_the_lowest_bypass_among_survivors():
    table = choose(filter_candidates(hand_table(), 10))
    assert table["chosen"].sum() == 1
    assert table.loc[table["chosen"], "layer"].item() == 5
    loose = choose(filter_candidates(hand_table(), 10, prune_layer_fraction=None, kl_threshold=None))
    assert loose.loc[loose["chosen"], "layer"].item() == 7  # with those filters off the global minimum wins


def test_reasons_accumulate_and_none_surviving_raises_with_counts():
    table = hand_table().assign(kl=1.0)
    filtered = filter_candidates(table, 10).set_index("layer")
    assert filtered.loc[3, "why"] == "kl > 0.1; induce < 0"
    with pytest.raises(ValueError, match=r"no candidate survives.*kl > 0.1: 7.*induce < 0: 1") as err:
        choose(filter_candidates(table, 10))
    assert isinstance(err.value, NoSurvivorError) and len(err.value.table) == 7  # scores kept for a re-choice
    assert not err.value.table["chosen"].any()


def test_select_direction_end_to_end(tiny, val, tokens):
    harmful, harmless = val
    cands = {(layer, "t_post_inst"): rand(tiny.cfg.d_model, 10 + layer) for layer in range(N_LAYERS)}
    sel = select_direction(tiny, harmful, harmless, cands, tokens, induce_threshold=None, kl_threshold=None,
                           batch_size=3, progress=False)
    t = sel.table.set_index("layer")
    assert t.loc[3, "why"] == "last 20% of layers" and t.loc[4, "why"] == "last 20% of layers"
    survivors = t[~t["filtered"]]
    assert list(survivors.index) == [0, 1, 2]
    assert sel.layer == survivors["bypass_score"].idxmin() and sel.position == "t_post_inst"
    assert torch.equal(sel.direction, cands[(sel.layer, "t_post_inst")])
    assert sel.chosen["layer"] == sel.layer
    fig = plots.selection_scores(sel.table)
    assert len(fig.layout.annotations) >= 3 and fig.layout.title.text
    assert fig.layout.xaxis.title.text and fig.layout.yaxis3.title.text


def test_random_model_fails_the_induce_filter(tiny, val, tokens):
    # a random model never puts half its mass on the refusal tokens: induce < 0 everywhere
    harmful, harmless = val
    cands = {(0, "t_post_inst"): rand(tiny.cfg.d_model, 3), (1, "t_post_inst"): rand(tiny.cfg.d_model, 4)}
    with pytest.raises(NoSurvivorError, match=r"induce < 0: 2") as err:
        select_direction(tiny, harmful, harmless, cands, tokens, progress=False)
    rechosen = choose(filter_candidates(err.value.table, N_LAYERS, induce_threshold=None, kl_threshold=None))
    assert rechosen.loc[rechosen["chosen"], "layer"].item() == err.value.table.loc[
        err.value.table["bypass_score"].idxmin(), "layer"]


def test_bad_inputs(tiny, val, tokens):
    harmful, harmless = val
    good = {(0, "t_post_inst"): rand(tiny.cfg.d_model, 3)}
    with pytest.raises(ValueError, match="shape"):
        score_candidates(tiny, harmful, harmless, {(0, "t_post_inst"): torch.ones(7)}, tokens, progress=False)
    with pytest.raises(ValueError, match="layer 9 outside"):
        score_candidates(tiny, harmful, harmless, {(9, "t_post_inst"): torch.ones(64)}, tokens, progress=False)
    with pytest.raises(ValueError, match="not harmful"):
        score_candidates(tiny, harmless, harmful, good, tokens, progress=False)
    with pytest.raises(ValueError, match="lacks columns"):
        filter_candidates(hand_table().drop(columns="kl"), 10)
