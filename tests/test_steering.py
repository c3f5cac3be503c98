"""steering.fit_methods and the method objects: where addition and the routed gate act, per scope; evaluate loops over methods."""

import numpy as np
import pytest
import torch
from helpers import build_model, chat_batch

from lowres_safety import probing
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin
from lowres_safety.pipelines import steering

LAYER = 1


@pytest.fixture(scope="module")
def fitted_on_tiny():
    model = build_model("qwen2")
    prompts = load_builtin(["en", "de"], n_per_class=6)
    acts = extract(model, prompts, "all", ("t_post_inst",), cache=False, progress=False)
    return model, acts, prompts


def fit(model, acts, **kw):
    from lowres_safety.methods import Ablation, Addition, GateRouting, NoIntervention

    return steering.fit_methods(model, acts, ["en", "de"], layer=LAYER,
                                methods=(NoIntervention, Ablation, Addition, GateRouting), **kw)


def target(acts, lang="en"):
    from lowres_safety.methods import Target

    return Target(lang, acts.where(language=lang), acts.where(language=lang))


def shifts(model, hooks, texts, v):
    """Projection on v̂ at blocks.LAYER.hook_resid_post with the hooks minus without: [batch, pos]."""
    ids, mask = chat_batch(model, texts)
    seen = []
    grab = [(f"blocks.{LAYER}.hook_resid_post", lambda act, hook: seen.append(act @ v) or act)]
    with torch.no_grad():
        for extra in ([], hooks):
            with model.hooks(fwd_hooks=extra + grab):
                model(ids, attention_mask=mask)
    return seen[1] - seen[0], seen[0]


@pytest.mark.parametrize("scope", ["from_last", "all"])
def test_addition_adds_alpha_at_the_scopes_positions(fitted_on_tiny, scope):
    model, acts, prompts = fitted_on_tiny
    f = fit(model, acts, lam=2.0, scope=scope)
    assert f.context.scope == scope and f.alpha > 0
    delta, _ = shifts(model, f.methods["addition"].hooks(target(acts), 0), prompts.texts[:3], f.direction)
    torch.testing.assert_close(delta[:, -1], torch.full((3,), f.alpha), atol=1e-3, rtol=1e-4)
    expected_rest = f.alpha if scope == "all" else 0.0
    torch.testing.assert_close(delta[:, :-1], torch.full_like(delta[:, :-1], expected_rest), atol=1e-3, rtol=1e-4)


def test_gate_with_scope_all_steers_or_ablates_every_position_of_a_row(fitted_on_tiny):
    model, acts, prompts = fitted_on_tiny
    f = fit(model, acts, scope="all")
    texts = prompts.texts
    delta, before = shifts(model, f.methods["gate"].hooks(target(acts), 0), texts, f.direction)
    harmful = torch.as_tensor(f.gate.margin(acts.at(LAYER, "t_post_inst").float()) >= 0)
    assert harmful.any() and (~harmful).any()  # both branches exercised
    torch.testing.assert_close(delta[harmful], torch.full_like(delta[harmful], f.alpha), atol=1e-3, rtol=1e-4)
    after = before + delta
    torch.testing.assert_close(after[~harmful], torch.zeros_like(after[~harmful]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="scope"):
        fit(model, acts, scope="prompt")


def test_choose_layer_searches_the_middle_of_the_model_not_of_the_layers_extracted():
    """A 28-layer model's middle half is 7..20; a set holding layers 5, 10 and 18 must reach 18."""
    import pandas as pd

    from lowres_safety.activations import ActivationSet
    from lowres_safety.data import PromptSet

    g = torch.Generator().manual_seed(0)
    n, d = 20, 8
    y = torch.tensor([1] * n + [0] * n, dtype=torch.float32)
    x = torch.randn(2 * n, 3, 1, d, generator=g)
    for i, strength in enumerate((0.2, 0.5, 3.0)):  # layer 18 separates best
        x[:, i, 0, 0] += strength * (2 * y - 1)
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(2 * n)], "text": "x", "language": "en",
                          "subset": ["harmful"] * n + ["harmless"] * n, "split": "demo",
                          "source_id": [f"s{i}" for i in range(2 * n)]})
    acts = ActivationSet(x, PromptSet(frame, "planted"), (5, 10, 18), ("t_post_inst",))
    assert probing.choose_layer(acts, ["en"], n_layers=28) == 18
    assert probing.choose_layer(acts, ["en"], n_layers=19) == 10  # 18 is outside a 19-layer model's middle


def test_evaluate_loops_over_method_objects_including_a_users_own(fitted_on_tiny, tmp_path):
    """A researcher's method is one small class; evaluate runs it beside the built-in ones without changes."""
    from dataclasses import dataclass

    from lowres_safety import hooks as H
    from lowres_safety.methods import NoIntervention

    @dataclass(frozen=True)
    class DoubleAddition(NoIntervention):
        name = "double_addition"
        direction: torch.Tensor = None
        alpha: float = 0.0

        @classmethod
        def fit(cls, ctx):
            return cls(ctx.direction, 2 * ctx.alpha)

        def hooks(self, target, k):
            return H.add(self.direction, self.alpha, LAYER, scope="from_last")

    model, acts, prompts = fitted_on_tiny
    f = steering.fit_methods(model, acts, ["en", "de"], layer=LAYER, methods=(NoIntervention, DoubleAddition))
    held = prompts.where(language="de")
    table, completions = steering.evaluate(model, f, held, acts.where(language="de"), acts.where(language="de"),
                                           ks=(0,), max_new_tokens=2, parts=tmp_path / "parts")
    assert list(table["method"]) == ["none", "double_addition"]
    assert table.set_index("method").loc["none", "kl"] == pytest.approx(0.0, abs=1e-6)
    assert table.set_index("method").loc["double_addition", "kl"] > 0
    assert len(list((tmp_path / "parts").glob("*.json"))) == 2  # each finished run is stored for resuming


def test_kl_ablated_is_the_kl_of_the_harmless_prompts_the_gate_routes_to_ablation(fitted_on_tiny):
    from lowres_safety.evaluation import kl_divergence
    from lowres_safety.generation import generate
    from lowres_safety.methods import GateRouting, NoIntervention

    model, acts, prompts = fitted_on_tiny
    f = steering.fit_methods(model, acts, ["en", "de"], layer=LAYER, methods=(NoIntervention, GateRouting))
    held = prompts.where(language="de")
    table, _ = steering.evaluate(model, f, held, acts.where(language="de"), acts.where(language="de"), ks=(0,),
                                 max_new_tokens=1)
    rows = table.set_index("method")
    assert "kl_ablated" in table and np.isnan(rows.loc["none", "kl_ablated"])  # nothing routed, no value
    hooks = f.methods["gate"].hooks(target(acts, "de"), 0)
    harmless = held.where(subset="harmless")
    routed = generate(model, harmless, hooks, max_new_tokens=1, progress=False)["ablated"].to_numpy(bool)
    each = kl_divergence(model, harmless, hooks).numpy()
    assert routed.any()  # at k = 0 the gate sends some harmless prompts to ablation
    assert rows.loc["gate", "kl_ablated"] == pytest.approx(each[routed].mean(), rel=1e-4, abs=1e-7)
    assert rows.loc["gate", "kl"] == pytest.approx(each.mean(), rel=1e-4, abs=1e-7)


def test_evaluate_refusal_columns_are_the_judges_rates_on_its_own_completions(fitted_on_tiny):
    """Catches: a row's rates read from another method's or k's answers, the subsets swapped, or Δ computed the
    other way round. The judge is a fixed rule on the text (a tiny random model never writes a refusal), so
    the rates vary between methods; the gate is checked at k = 0 and at k = 2 (recalibrated)."""
    from lowres_safety.methods import Addition, GateRouting, NoIntervention

    def judge(prompt, completion):  # any deterministic rule on the text works as a judge
        return sum(map(ord, completion)) % 3 == 0

    model, acts, prompts = fitted_on_tiny
    f = steering.fit_methods(model, acts, ["en", "de"], layer=LAYER, lam=4.0,
                             methods=(NoIntervention, Addition, GateRouting))
    held = prompts.where(language="de")
    table, completions = steering.evaluate(model, f, held, acts.where(language="de"), acts.where(language="de"),
                                           ks=(0, 2), max_new_tokens=3, judge=judge)
    assert {(m, k) for m, k in zip(table["method"], table["k"])} >= {("gate", 0), ("gate", 2)}
    refused = [judge(p, c) for p, c in zip(completions["id"], completions["completion"])]
    rates = completions.assign(refused=refused).groupby(["method", "k", "subset"])["refused"].mean() * 100
    for _, row in table.iterrows():
        harmful, harmless = rates[row["method"], row["k"], "harmful"], rates[row["method"], row["k"], "harmless"]
        assert row["harmful_refusal"] == pytest.approx(harmful) and row["harmless_refusal"] == pytest.approx(harmless)
        assert row["selectivity"] == pytest.approx(harmful - harmless)
    assert table["harmful_refusal"].nunique() + table["harmless_refusal"].nunique() > 2  # the rates do vary


def test_the_selectivity_chart_has_one_bar_per_method_k_and_language():
    """Catches: a method's k = 0 and k = 32 rows drawn as one trace, which plotly stacks (AdaSteer and CAST reached
    a Δ of 100–125, which cannot exceed 100)."""
    import pandas as pd

    from lowres_safety import plots

    rows = [{"language": lang, "tier": "low", "method": m, "k": k, "selectivity": 60.0, "harmful_refusal": 80.0,
             "harmless_refusal": 20.0, "kl": 0.1}
            for lang in ("ar", "yo") for m, k in (("none", 0), ("adasteer", 0), ("adasteer", 32), ("gate", 0),
                                                  ("gate", 4))]
    fig = plots.selectivity_bars(pd.DataFrame(rows))
    names = sorted(trace.name for trace in fig.data)
    assert names == ["adasteer k=0", "adasteer k=32", "gate k=0", "gate k=4", "none"]
    for trace in fig.data:
        assert sorted(trace.x) == ["ar", "yo"] and max(trace.y) <= 100  # one bar per language in each trace


def test_the_gates_arms_give_the_routed_hooks_completions_and_are_generated_once(fitted_on_tiny, tmp_path):
    """Catches: the memo's arm decision differing from the routed hook's (threshold side, margin sign, arms
    swapped), the gate's addition arm not being addition's, or an arm generated again for each k.
    Reference: generation under the real routed hooks (hooks.route), each prompt alone (no padding), at k = 0, 1, 2;
    the generation count written out from the arms' decisions."""
    from lowres_safety.generation import generate
    from lowres_safety.methods import Addition, GateRouting, NoIntervention
    from lowres_safety.pipelines.memo import CompletionMemo

    model, acts, prompts = fitted_on_tiny
    f = steering.fit_methods(model, acts, ["en", "de"], layer=LAYER, lam=4.0,
                             methods=(NoIntervention, Addition, GateRouting))
    held, pool = prompts.where(language="de"), acts.where(language="de")
    memo = CompletionMemo(model, max_new_tokens=4, batch_size=1, folder=tmp_path / "memo")
    table, completions = steering.evaluate(model, f, held, pool, pool, ks=(0, 1, 2), max_new_tokens=4, batch_size=1,
                                           memo=memo)
    gate, t = f.methods["gate"], target(acts, "de")
    ablated_anywhere = set()
    for k in (0, 1, 2):
        hooked = generate(model, held, gate.hooks(t, k), max_new_tokens=4, batch_size=1, progress=False)
        mine = completions[(completions["method"] == "gate") & (completions["k"] == k)]
        assert mine["completion"].tolist() == hooked["completion"].tolist()
        assert mine["ablated"].tolist() == hooked["ablated"].tolist()
        ablated_anywhere |= set(hooked.loc[hooked["ablated"].astype(bool), "id"])
    assert 0 < len(ablated_anywhere) < len(held)  # both arms are used, or the check is empty
    assert memo.generated == 2 * len(held) + len(ablated_anywhere)  # none, addition (the gate's other arm), ablation
    again = CompletionMemo(model, max_new_tokens=4, batch_size=1, folder=tmp_path / "memo")
    steering.evaluate(model, f, held, pool, pool, ks=(0, 1, 2), max_new_tokens=4, batch_size=1, memo=again)
    assert again.generated == 0  # read back from disk
