"""Interventional transfer: cells against hand computations, baselines, shape, judges and bad input."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model

from lowres_safety import hooks as H
from lowres_safety import plots
from lowres_safety.data import PromptSet, load_builtin
from lowres_safety.evaluation import first_token_ids, refusal_score
from lowres_safety.generation import generate
from lowres_safety.transfer import GenerationJudge, LogitJudge, interventional_transfer

LANGS = ["en", "de", "sw"]
LAYERS = {"en": 1, "de": 2, "sw": 0}


@pytest.fixture(scope="module")
def tiny():
    return build_model("qwen2")


@pytest.fixture(scope="module")
def prompts():
    return load_builtin(LANGS, n_per_class=3)


@pytest.fixture(scope="module")
def tokens(tiny):
    return first_token_ids(tiny.tokenizer, ["I'm sorry", "Sorry", "As an AI"])


@pytest.fixture(scope="module")
def dirs(tiny):
    gen = torch.Generator().manual_seed(7)
    return {lang: 3 * torch.randn(tiny.cfg.d_model, generator=gen) for lang in ["en", "de"]}


def soft(tokens):
    """P(refusal tokens) per prompt: every change of the score shows in the rate."""
    return lambda model, p, hooks: torch.sigmoid(refusal_score(model, p, tokens, hooks, batch_size=2)).numpy()


@pytest.fixture(scope="module")
def soft_table(tiny, prompts, tokens, dirs):
    return interventional_transfer(tiny, prompts, dirs, LAYERS, measure=soft(tokens), progress=False)


def cell(table, source, target):
    return table.set_index(["source", "target"]).loc[(source, target)]


def p_refuse(model, prompts, tokens, hooks=()):
    return 100 * float(torch.sigmoid(refusal_score(model, prompts, tokens, hooks)).mean())


def test_one_cell_by_hand(tiny, prompts, tokens, dirs, soft_table):
    row = cell(soft_table, "en", "de")
    harmful = prompts.where(language="de", subset="harmful")
    harmless = prompts.where(language="de", subset="harmless")
    ablated = p_refuse(tiny, harmful, tokens, H.ablate(dirs["en"], range(tiny.cfg.n_layers)))
    added = p_refuse(tiny, harmless, tokens, H.add(dirs["en"], float(dirs["en"].norm()), LAYERS["en"], scope="all"))
    assert row["ablated_harmful_refusal"] == pytest.approx(ablated, rel=1e-4)
    assert row["added_harmless_refusal"] == pytest.approx(added, rel=1e-4)
    assert row["alpha"] == pytest.approx(float(dirs["en"].norm())) and row["layer"] == LAYERS["en"]
    # the hand numbers are sensitive to the intervention, so a wrong direction or layer would show
    assert row["ablated_harmful_refusal"] != pytest.approx(row["baseline_harmful_refusal"], rel=1e-3)
    assert row["added_harmless_refusal"] != pytest.approx(cell(soft_table, "de", "de")["added_harmless_refusal"],
                                                          rel=1e-3)


def test_baselines_are_the_unhooked_rates(tiny, prompts, tokens, soft_table):
    for target in LANGS:
        for subset in ("harmful", "harmless"):
            expected = p_refuse(tiny, prompts.where(language=target, subset=subset), tokens)
            got = soft_table.loc[soft_table["target"] == target, f"baseline_{subset}_refusal"]
            assert np.allclose(got, expected, rtol=1e-4), (target, subset)


def test_shape_and_columns(soft_table):
    assert len(soft_table) == 2 * 3
    assert set(zip(soft_table["source"], soft_table["target"])) == {(s, t) for s in ["en", "de"] for t in LANGS}
    assert {"tier_source", "tier_target", "n_harmful", "n_harmless", "judge"} <= set(soft_table.columns)
    assert (soft_table["n_harmful"] == 3).all() and (soft_table["n_harmless"] == 3).all()
    assert np.allclose(soft_table["drop"], soft_table["baseline_harmful_refusal"] - soft_table["ablated_harmful_refusal"])
    assert cell(soft_table, "en", "sw")["tier_target"] == "low"


def test_logit_judge_thresholds_log_odds(tiny, prompts, tokens, dirs):
    de = prompts.where(language="de", subset="harmful")
    hooks = H.ablate(dirs["en"], range(tiny.cfg.n_layers))
    scores = refusal_score(tiny, de, tokens, hooks)
    threshold = float(scores.sort().values[:2].mean())  # between the lowest two: 2 of 3 refuse
    table = interventional_transfer(tiny, prompts.where(language="de"), {"en": dirs["en"]}, 1,
                                    measure=LogitJudge(tokens, threshold=threshold), progress=False)
    base = refusal_score(tiny, de, tokens)
    assert table["ablated_harmful_refusal"].item() == pytest.approx(100 * 2 / 3)
    assert table["baseline_harmful_refusal"].item() == pytest.approx(100 * float((base > threshold).float().mean()))
    assert table["judge"].item() == "logit"


def test_logit_judge_grid_equals_one_pass_per_point(tiny, prompts, tokens, dirs):
    # threshold between the two middle unhooked scores: half the prompts refuse, so rates can move
    odds = refusal_score(tiny, prompts, tokens).sort().values
    judge = LogitJudge(tokens, threshold=float(odds[len(odds) // 2 - 1: len(odds) // 2 + 1].mean()))
    fast = interventional_transfer(tiny, prompts, dirs, LAYERS, measure=judge, progress=False)
    slow = interventional_transfer(tiny, prompts, dirs, LAYERS, measure=lambda m, p, h: judge(m, p, h),
                                   progress=False)
    assert not hasattr(slow, "grid") and (slow["judge"] == "custom").all()
    pd.testing.assert_frame_equal(fast.drop(columns="judge"), slow.drop(columns="judge"))
    assert fast[["ablated_harmful_refusal", "added_harmless_refusal"]].stack().nunique() > 1


def test_alpha_overrides_the_raw_norm(tiny, prompts, tokens, dirs):
    harmless = prompts.where(language="sw", subset="harmless")
    table = interventional_transfer(tiny, prompts.where(language="sw"), {"de": dirs["de"]}, 2, alpha=1.5,
                                    measure=soft(tokens), progress=False)
    expected = p_refuse(tiny, harmless, tokens, H.add(dirs["de"], 1.5, 2, scope="all"))
    assert table["added_harmless_refusal"].item() == pytest.approx(expected, rel=1e-4)
    assert table["alpha"].item() == 1.5


def test_generation_judge_matches_generate_and_judge(tiny, prompts, dirs):
    judge = lambda prompt, completion: len(completion) % 2 == 0  # noqa: E731 - depends on the text, not on its language
    sw = prompts.where(language="sw", subset="harmful")
    hooks = H.ablate(dirs["en"], range(tiny.cfg.n_layers))
    got = GenerationJudge(judge, max_new_tokens=3, batch_size=2)(tiny, sw, hooks)
    gen = generate(tiny, sw, hooks, max_new_tokens=3, batch_size=2, progress=False)
    expected = [float(judge(p, c)) for p, c in zip(gen["text"], gen["completion"])]
    assert got.tolist() == expected


def test_bad_inputs(tiny, prompts, dirs):
    with pytest.raises(ValueError, match=r"direction of source 'xx' has shape \(7,\).*d_model=64"):
        interventional_transfer(tiny, prompts, {"xx": torch.ones(7)}, 1, progress=False)
    no_harmful = PromptSet(prompts.frame[~((prompts.frame["language"] == "de") &
                                           (prompts.frame["subset"] == "harmful"))], "test set")
    with pytest.raises(ValueError, match="target language 'de' has no harmful prompts in test set"):
        interventional_transfer(tiny, no_harmful, dirs, 1, progress=False)
    with pytest.raises(ValueError, match=r"no addition layer for source\(s\) \['de'\]"):
        interventional_transfer(tiny, prompts, dirs, {"en": 1}, progress=False)
    with pytest.raises(ValueError, match="outside"):
        interventional_transfer(tiny, prompts, dirs, 9, progress=False)


def test_heatmap(soft_table):
    fig = plots.transfer_intervention_heatmap(soft_table)
    assert len(fig.data) == 2 and fig.layout.title.text
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert list(fig.data[0].y) == ["en", "de"] and list(fig.data[0].x) == LANGS
    assert isinstance(soft_table, pd.DataFrame)


def test_the_released_experiment_ablates_everywhere_and_adds_the_raw_direction_at_its_block_input(tiny, prompts, dirs):
    """Catches: the released experiment's addition put at the block output, before that block's ablation (the
    ablation would erase it), or run without the all-layer ablation (the direction would survive the next block's
    input). A measure that reads the residual stream under each point's hooks checks the projection on r̂ at
    block L's and block L+1's input: ‖r‖ and 0 for ablation + addition, ‖r‖ and nonzero for the addition alone."""
    from lowres_safety.transfer import released_transfer

    seen = []

    def reading(model, p, hooks):
        grab = {}
        capture = [(f"blocks.{layer}.hook_resid_pre", lambda act, hook, layer=layer: grab.setdefault(layer, act) is None
                    or act) for layer in (LAYERS["en"], LAYERS["en"] + 1)]
        with torch.no_grad(), model.hooks(fwd_hooks=list(hooks) + capture):
            model(torch.tensor([[1, 2, 3]]))
        seen.append({layer: act for layer, act in grab.items()})
        return np.zeros(len(p))

    table = released_transfer(tiny, prompts, {"en": dirs["en"]}, LAYERS["en"], measure=reading, progress=False)
    assert list(table.columns[-4:]) == ["baseline_harmful_refusal", "ablated_and_added_harmful_refusal",
                                        "added_harmful_refusal", "n_harmful"]
    assert set(table["target"]) == set(LANGS) and (table["n_harmful"] == 3).all()
    r = dirs["en"]
    u = r / r.norm()
    _, both, added = seen
    L = LAYERS["en"]
    torch.testing.assert_close((both[L][0] @ u), torch.full((3,), float(r.norm())), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close((both[L + 1][0] @ u), torch.zeros(3), atol=1e-3, rtol=0)
    torch.testing.assert_close((added[L][0] @ u) - (seen[0][L][0] @ u), torch.full((3,), float(r.norm())),
                               atol=1e-3, rtol=1e-4)
    assert (added[L + 1][0] @ u).abs().max() > 1e-2
