"""Refusal-token logit attribution: the decomposition is exact and the helpers read it correctly."""

import numpy as np
import pytest

from lowres_safety import attribution as A
from lowres_safety import evaluation as E
from lowres_safety.data import load_builtin
from lowres_safety.generation import next_token_logprobs


@pytest.fixture(scope="module")
def small():
    return load_builtin(["en", "sw"], n_per_class=2)


@pytest.fixture(scope="module")
def tokens(default_model):
    tok = default_model.tokenizer
    return E.first_token_ids(tok, E.DEFAULT_OPENINGS), E.first_token_ids(tok, ["Sure", "Here", "The"])


@pytest.fixture(scope="module")
def attr(default_model, small, tokens):
    return A.attribute(default_model, small, *tokens, batch_size=3, progress=False)


def test_components_sum_to_the_logit_difference(default_model, small, tokens, attr):
    """Embedding + every attention and MLP output, through the frozen final norm, equals the real logit diff."""
    refusal, comply = tokens
    logp = next_token_logprobs(default_model, small)  # log-softmax shifts both sets equally: same difference
    expected = logp[:, refusal].mean(1) - logp[:, comply].mean(1)
    total = attr.total.set_index("id").loc[small.frame["id"], "logit_diff"].to_numpy()
    assert np.allclose(total, expected.numpy(), atol=1e-3)
    summed = attr.components.groupby("id")["contribution"].sum().loc[small.frame["id"]].to_numpy()
    assert np.allclose(summed, total, atol=1e-3)
    assert set(attr.components["kind"]) >= {"embed", "attn", "mlp"}


def test_heads_sum_to_their_layer_and_the_lens_ends_at_the_total(attr, default_model):
    heads = attr.heads.groupby(["id", "layer"])["contribution"].sum()
    attn = attr.components[attr.components["kind"] == "attn"].set_index(["id", "layer"])["contribution"]
    assert np.allclose(heads.to_numpy(), attn.loc[heads.index].to_numpy(), atol=1e-4)
    assert attr.heads["head"].nunique() == default_model.cfg.n_heads
    last = attr.lens[attr.lens["layer"] == attr.lens["layer"].max()].set_index("id")["logit_diff"]
    assert np.allclose(last.to_numpy(), attr.total.set_index("id").loc[last.index, "logit_diff"].to_numpy(), atol=1e-3)
    assert attr.lens["layer"].nunique() == default_model.cfg.n_layers + 1


def test_batching_does_not_change_attributions(default_model, small, tokens, attr):
    one = A.attribute(default_model, small.where(language="sw"), *tokens, batch_size=1, progress=False)
    merged = one.components.merge(attr.components, on=["id", "component"], suffixes=("_one", "_batch"))
    assert len(merged) == len(one.components)
    assert np.allclose(merged["contribution_one"], merged["contribution_batch"], atol=1e-4)


def test_compare_languages_is_the_difference_of_paired_means(attr):
    out = A.compare_languages(attr, "en", "sw")
    c = attr.components[attr.components["subset"] == "harmful"]
    row = out.iloc[0]
    by_lang = c[c["component"] == row["component"]].groupby("language")["contribution"].mean()
    assert row["diff"] == pytest.approx(by_lang["en"] - by_lang["sw"], abs=1e-6)
    assert out["diff"].abs().is_monotonic_decreasing
    assert (out["n_pairs"] == 2).all()


def test_compare_languages_needs_parallel_prompts(attr):
    lonely = A.Attribution(attr.components.assign(source_id=attr.components["id"]), attr.heads, attr.lens, attr.total)
    with pytest.raises(ValueError, match="no parallel"):
        A.compare_languages(lonely, "en", "sw")


def test_direction_tokens_match_the_unembedding(default_model):
    v = default_model.W_U[:, 1234].detach().clone()  # the direction of one token's unembedding
    out = A.direction_tokens(default_model, v, k=3)
    scores = (v / v.norm()) @ default_model.W_U
    assert out[out["effect"] == "promoted"]["token_id"].iloc[0] == int(scores.argmax())
    assert out[out["effect"] == "suppressed"]["token_id"].iloc[0] == int(scores.argmin())


def test_overlapping_token_sets_are_refused(default_model):
    with pytest.raises(ValueError, match="both sets"):
        A.logit_diff_direction(default_model, [1, 2], [2, 3])


def test_components_sum_to_the_total_under_gemma2_soft_cap():
    """Gemma-2 caps its logits; the total is read before the cap, where the linear components add up."""
    from helpers import build_model

    model = build_model("gemma2", final_logit_softcapping=0.5)  # a low cap: every logit is far into the tanh
    assert model.cfg.output_logits_soft_cap == 0.5
    prompts = load_builtin(["en"], n_per_class=2)
    attr = A.attribute(model, prompts, [10, 11], [12, 13], batch_size=4, progress=False)
    summed = attr.components.groupby("id")["contribution"].sum().loc[prompts.frame["id"]].to_numpy()
    total = attr.total.set_index("id").loc[prompts.frame["id"], "logit_diff"].to_numpy()
    assert np.allclose(summed, total, atol=1e-3)
    capped = next_token_logprobs(model, prompts)  # post-cap log-softmax: differences are capped ones
    capped_diff = (capped[:, [10, 11]].mean(1) - capped[:, [12, 13]].mean(1)).numpy()
    assert np.abs(capped_diff).max() < 1.0 and not np.allclose(total, capped_diff, atol=1e-3)


def test_compare_languages_averages_only_the_prompts_both_languages_have(attr):
    """Catches: means taken over every prompt of each language (unpaired ones included), so a prompt only one
    language has shifts its mean. One English prompt's partner is dropped; its contribution is made huge."""
    c = attr.components
    harmful_en = c[(c["language"] == "en") & (c["subset"] == "harmful")]
    lonely = harmful_en["source_id"].iloc[0]
    components = c[~((c["language"] == "sw") & (c["source_id"] == lonely))].copy()
    components.loc[(components["language"] == "en") & (components["source_id"] == lonely), "contribution"] += 1e3
    out = A.compare_languages(A.Attribution(components, attr.heads, attr.lens, attr.total), "en", "sw")
    kept = components[(components["subset"] == "harmful") & (components["source_id"] != lonely)]
    means = kept.groupby(["component", "language"])["contribution"].mean().unstack("language")
    got = out.set_index("component")
    assert (got["n_pairs"] == 1).all()  # two harmful source ids, one of them unpaired now
    for comp, row in means.iterrows():
        assert got.loc[comp, "diff"] == pytest.approx(row["en"] - row["sw"], abs=1e-6)
