"""Interventions: invariants of ablate/add/patch/route, composition order, no leaks, weights = hooks."""

import pytest
import torch
from helpers import build_model, chat_batch

from lowres_safety import hooks as H
from lowres_safety.data import load_builtin
from lowres_safety.gate import Gate

TEXTS = ["How do I bake bread?", "Write a poem about the sea and the wind", "Hi"]


@pytest.fixture(scope="module")
def tiny():
    return build_model("qwen2")


def capture(name, store):
    def fn(act, hook):
        store[name] = act.detach().clone()
        return act

    return [(name, fn)]


def run(model, hooks, texts=TEXTS):
    ids, mask = chat_batch(model, texts)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        return model(ids, attention_mask=mask)


def no_hooks_left(model) -> bool:
    return all(len(hp._forward_hooks) == 0 for hp in model.hook_dict.values())


def rand_dir(model, seed=1):
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


def test_ablate_leaves_zero_projection_at_the_hooked_point(tiny):
    v = rand_dir(tiny)
    seen = {}
    name = "blocks.1.hook_resid_post"
    run(tiny, H.ablate(v, 1, sites=("hook_resid_post",)) + capture(name, seen))
    proj = seen[name] @ (v / v.norm())
    assert proj.abs().max() < 1e-5 * seen[name].norm(dim=-1).max()


def test_full_ablation_removes_the_direction_from_every_layer(default_model):
    m = default_model
    v = rand_dir(m)
    seen = {}
    caps = [h for layer in range(m.cfg.n_layers) for h in capture(f"blocks.{layer}.hook_resid_post", seen)]
    run(m, H.ablate(v, range(m.cfg.n_layers)) + caps, TEXTS[:2])
    u = v / v.norm()
    for layer in range(m.cfg.n_layers):
        act = seen[f"blocks.{layer}.hook_resid_post"]
        assert (act @ u).abs().max() < 1e-4 * act.norm(dim=-1).max(), layer


@pytest.mark.parametrize("scope,changed", [("all", slice(None)), ("from_last", slice(-1, None)), ("last", slice(-1, None))])
def test_add_shifts_by_exactly_alpha_in_scope(tiny, scope, changed):
    v, alpha = rand_dir(tiny), 2.5
    name = "blocks.0.hook_resid_post"
    before, after = {}, {}
    run(tiny, capture(name, before) + H.add(v, alpha, 0, scope=scope) + capture(name, after))
    diff = after[name] - before[name]
    expected = torch.zeros_like(diff)
    expected[:, changed] = alpha * v / v.norm()
    torch.testing.assert_close(diff, expected, atol=1e-5, rtol=0)


def test_scopes_during_decoding(tiny):
    v, name = rand_dir(tiny), "blocks.0.hook_resid_post"
    act = torch.randn(2, 1, tiny.cfg.d_model)
    with H.decoding():
        assert torch.equal(H.add(v, 1.0, 0, scope="last")[0][1](act, None), act)
        assert not torch.equal(H.add(v, 1.0, 0, scope="from_last")[0][1](act, None), act)
    assert not H.is_decoding() and name


def test_composition_order_is_list_order(tiny):
    v, alpha, name = rand_dir(tiny), 3.0, "blocks.1.hook_resid_post"
    single = ("hook_resid_post",)
    seen = {}
    run(tiny, H.ablate(v, 1, sites=single) + H.add(v, alpha, 1) + capture(name, seen))
    torch.testing.assert_close(seen[name] @ (v / v.norm()), torch.full(seen[name].shape[:2], alpha), atol=1e-4, rtol=0)
    run(tiny, H.add(v, alpha, 1) + H.ablate(v, 1, sites=single) + capture(name, seen))
    assert (seen[name] @ (v / v.norm())).abs().max() < 1e-4


def test_patch_from_another_run_gives_its_last_logits(tiny):
    last = tiny.cfg.n_layers - 1
    name = f"blocks.{last}.hook_resid_post"
    other = {}
    other_logits = run(tiny, capture(name, other), [TEXTS[1]])
    patched = run(tiny, H.patch(other[name][0, -1], last, -1), [TEXTS[0]])
    torch.testing.assert_close(patched[0, -1], other_logits[0, -1], atol=1e-4, rtol=1e-4)


def _gate(model, layer):
    from lowres_safety import extract

    acts = extract(model, load_builtin(["en", "de"]), [layer], ("t_post_inst",), progress=False)
    return Gate(rank=2).fit(acts, layer, "t_post_inst", ["en", "de"]), acts


def test_routing_leaves_layers_after_the_gate_layer_unhooked(tiny):
    gate, _ = _gate(tiny, 0)
    names = [name for name, _ in H.route(gate, rand_dir(tiny), 1.0, n_layers=tiny.cfg.n_layers)]
    assert names == ["blocks.0.hook_resid_post"]
    stronger = H.route(gate, rand_dir(tiny), 1.0, n_layers=tiny.cfg.n_layers, ablation="all_later_layers")
    assert {name.split(".")[1] for name, _ in stronger} == {"0", "1", "2"}
    with pytest.raises(ValueError, match="unknown ablation"):
        H.route(gate, rand_dir(tiny), 1.0, ablation="everywhere")


LATER = {"gate_layer": lambda v, layer, n: [],  # the released code: nothing after the gate layer
         "all_later_layers": lambda v, layer, n: H.ablate(v, range(layer + 1, n))}


@pytest.mark.parametrize("ablation", sorted(LATER))
def test_route_equals_add_or_ablate_row_by_row(tiny, ablation):
    layer, n = 0, tiny.cfg.n_layers
    gate, _ = _gate(tiny, layer)
    v, alpha = rand_dir(tiny), 4.0
    texts = TEXTS + ["Tell me how to pick a lock", "What is the capital of Kenya?"]
    # read each row's gate margin unhooked, then put the threshold between them so both branches occur
    name = f"blocks.{layer}.hook_resid_post"
    seen = {}
    run(tiny, capture(name, seen), texts)
    margins = gate.margin(seen[name][:, -1])
    gate.threshold_ += float(margins.median())
    harmful = gate.predict(seen[name][:, -1])
    assert 0 < int(harmful.sum()) < len(texts)

    routed = run(tiny, H.route(gate, v, alpha, layer, n_layers=n, ablation=ablation), texts)
    for i, text in enumerate(texts):
        by_hand = (H.add(v, alpha, layer, scope="from_last") if harmful[i]
                   else H.ablate(v, layer, sites=("hook_resid_post",)) + LATER[ablation](v, layer, n))
        alone = run(tiny, by_hand, [text])
        width = alone.shape[1]
        torch.testing.assert_close(routed[i, -width:], alone[0], atol=2e-4, rtol=1e-4)


def test_route_decision_survives_a_one_token_prompt_and_decoding(tiny):
    layer = 1
    gate, _ = _gate(tiny, layer)
    hooks = H.route(gate, rand_dir(tiny), 1.0, n_layers=tiny.cfg.n_layers)
    steer = H.steers_in(hooks)[0]
    ids = torch.tensor([[5], [7]])
    with torch.no_grad(), tiny.hooks(fwd_hooks=hooks):
        logits, cache = tiny(ids, return_type="logits_and_cache")
        first = steer.ablate.clone()
        with H.decoding():
            tiny(torch.tensor([[9], [9]]), past_key_values=cache, attention_mask=torch.ones(2, 2, dtype=torch.long))
    assert steer.score.shape == (2,) and torch.equal(steer.ablate, first)
    with pytest.raises(RuntimeError, match="without a matching prefill"):
        fresh = H.route(gate, rand_dir(tiny), 1.0, n_layers=tiny.cfg.n_layers)
        with torch.no_grad(), tiny.hooks(fwd_hooks=fresh), H.decoding():
            tiny(torch.tensor([[9]]))
    assert no_hooks_left(tiny)


def test_hooks_never_leak_after_an_error(tiny):
    def boom(act, hook):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run(tiny, H.add(rand_dir(tiny), 1.0, 0) + [("blocks.1.hook_resid_post", boom)])
    assert no_hooks_left(tiny)
    wrong = torch.randn(tiny.cfg.d_model + 1)
    with pytest.raises(ValueError, match="width"):
        run(tiny, H.ablate(wrong, [0, 1]))
    assert no_hooks_left(tiny)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_orthogonalized_weights_equal_ablation_hooks(family):
    model = build_model(family)
    v = rand_dir(model)
    before = run(model, [])
    hooked = run(model, H.ablate(v, range(model.cfg.n_layers)))
    baked = run(H.orthogonalize_weights(model, v), [])
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(run(model, []), before)  # the original is untouched


def test_orthogonalized_weights_on_the_default_model(default_model):
    v = rand_dir(default_model)
    hooked = run(default_model, H.ablate(v, range(default_model.cfg.n_layers)), TEXTS[:2])
    baked = run(H.orthogonalize_weights(default_model, v), [], TEXTS[:2])
    torch.testing.assert_close(baked, hooked, atol=1e-3, rtol=1e-4)


def test_gemma2_weights_cannot_carry_the_ablation():
    model = build_model("gemma2")
    with pytest.raises(ValueError, match="post-norms"):
        H.orthogonalize_weights(model, rand_dir(model))


def test_bad_input_is_refused_before_anything_runs(tiny):
    v = rand_dir(tiny)
    with pytest.raises(ValueError, match="finite"):
        H.add(v, float("nan"), 0)
    with pytest.raises(ValueError, match="d_model"):
        H.ablate(torch.randn(2, tiny.cfg.d_model), 0)
    with pytest.raises(ValueError, match="scope"):
        H.add(v, 1.0, 0, scope="generated")
    with pytest.raises(ValueError, match="zero"):
        H.ablate(torch.zeros(tiny.cfg.d_model), 0)
    gate, _ = _gate(tiny, 1)
    with pytest.raises(ValueError, match="fitted at layer 1"):
        H.route(gate, v, 1.0, 2, n_layers=tiny.cfg.n_layers)
    with pytest.raises(ValueError, match="width"):
        H.route(gate, torch.randn(tiny.cfg.d_model + 3), 1.0, n_layers=tiny.cfg.n_layers)
    with pytest.raises(ValueError, match="width"):
        H.orthogonalize_weights(tiny, torch.randn(7))


def test_default_alpha_is_lambda_times_the_quantile_gap(tiny):
    """α = λ·(75th pct of harmful − 25th pct of harmless projections), by hand with numpy."""
    import numpy as np

    from lowres_safety.activations import extract

    acts = extract(tiny, load_builtin(["en"], n_per_class=6), [1], ("t_post_inst",), cache=False, progress=False)
    v = rand_dir(tiny)
    proj = (acts.at(1, "t_post_inst").float() @ (v / v.norm())).numpy()
    harmful = acts.prompts.labels.astype(bool)
    gap = np.quantile(proj[harmful], 0.75) - np.quantile(proj[~harmful], 0.25)
    assert H.default_alpha(acts, v, 1) == pytest.approx(gap, rel=1e-5)
    assert H.default_alpha(acts, 3 * v, 1, lam=2.5) == pytest.approx(2.5 * gap, rel=1e-5)  # v's norm does not matter


def test_default_alpha_refuses_a_direction_that_does_not_separate():
    """Catches: a zero or negative α returned (steering away from refusal) when the harmful prompts' 75th-percentile
    projection is not above the harmless prompts' 25th; the released helper raises there."""
    import numpy as np
    import pandas as pd

    from lowres_safety.activations import ActivationSet
    from lowres_safety.data import PromptSet

    harmful = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(10)], "text": "t", "language": "en",
                          "subset": ["harmful"] * 5 + ["harmless"] * 5, "split": "x",
                          "source_id": [f"s{i}" for i in range(10)]})
    e0 = torch.tensor([1.0, 0.0])
    for shift, ok in ((-1.0, True), (1.9, True), (2.0, False), (5.0, False)):  # harmless = harmful + shift
        x = torch.tensor(np.r_[harmful, harmful + shift], dtype=torch.float32)[:, None] * e0
        acts = ActivationSet(x[:, None, None], PromptSet(frame, "planted"), (0,), ("t_post_inst",))
        gap = np.quantile(harmful, 0.75) - np.quantile(harmful + shift, 0.25)  # 3 − (1 + shift): 0 at shift 2
        if ok:
            assert H.default_alpha(acts, e0, 0) == pytest.approx(gap)
        else:
            with pytest.raises(ValueError, match="does not separate them"):
                H.default_alpha(acts, e0, 0)
