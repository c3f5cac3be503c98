"""The released directional_ablation baseline on a tiny 20-layer bridge: where it ablates, and which direction."""

import pytest
import torch
from helpers import build_model, chat_batch

from lowres_safety import directions as dirs
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin
from lowres_safety.methods import DirectionalAblation
from lowres_safety.methods.base import Context, Target


@pytest.fixture(scope="module")
def setup():
    model = build_model("qwen2", num_hidden_layers=20)
    acts = extract(model, load_builtin(["en", "de", "sw"], n_per_class=3, seed=0), "all", ("t_post_inst",),
                   progress=False)
    ctx = Context(model=model, acts=acts.where(language=["en", "de"]), layer=5, direction=torch.ones(model.cfg.d_model),
                  alpha=1.0, n_layers=model.cfg.n_layers)
    sw = acts.where(language="sw")
    return model, acts, ctx, Target("sw", sw, sw)


def _states(model, hooks):
    seen = {}

    def grab(layer):
        def fn(act, hook):
            seen[layer] = act.detach().clone()
            return act
        return fn

    ids, mask = chat_batch(model, ["How do I bake bread?", "Hi"])
    capture = [(f"blocks.{layer}.hook_resid_post", grab(layer)) for layer in (17, 18, 19)]
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks) + capture):
        model(ids, attention_mask=mask)
    return seen


def test_directional_ablation_removes_english_direction_at_block_outputs_18_on(setup):
    """Catches: Arditi's sites instead of block outputs, the wrong range, the direction read at another layer or
    language. Reference: the difference of means of the English prompts at layer 19 (the range's last, clipped to
    20 layers), computed here; projections read after the hooks."""
    model, acts, ctx, target = setup
    method = DirectionalAblation.fit(ctx)
    assert method.layers == (18, 19)
    en = acts.where(language="en")
    y = en.prompts.labels.astype(bool)
    v = en.acts[y, 19, 0].mean(0) - en.acts[~y, 19, 0].mean(0)
    torch.testing.assert_close(dirs.unit(method.direction_for(target)), dirs.unit(v))
    base, ablated = _states(model, []), _states(model, method.hooks(target, 0))
    u = dirs.unit(v)
    torch.testing.assert_close(ablated[17], base[17])  # before the range: untouched
    for layer in (18, 19):
        assert (ablated[layer] @ u).abs().max() < 1e-4  # every token, padding included
    assert (base[19] @ u).abs().max() > 1e-2


def test_per_language_and_hrl_sources_and_a_range_outside_the_model(setup):
    model, acts, ctx, target = setup
    own = DirectionalAblation.fit(ctx, source="per_language")
    sw = acts.where(language="sw")
    y = sw.prompts.labels.astype(bool)
    torch.testing.assert_close(own.direction_for(target), sw.acts[y, 19, 0].mean(0) - sw.acts[~y, 19, 0].mean(0))
    anchored = DirectionalAblation.fit(ctx, direction_layer=10)  # the anchor-layer sweep's knob
    en = acts.where(language="en")
    ye = en.prompts.labels.astype(bool)
    torch.testing.assert_close(anchored.direction, en.acts[ye, 10, 0].mean(0) - en.acts[~ye, 10, 0].mean(0))
    with pytest.raises(ValueError, match="holds no layer"):
        DirectionalAblation.fit(ctx, layer_range=(25, 30))
    with pytest.raises(ValueError, match="not a language"):
        DirectionalAblation.fit(ctx, source="xx")
