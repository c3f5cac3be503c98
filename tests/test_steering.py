"""steering.fit_methods / method_hooks: where addition and the routed gate act, per scope."""

import pytest
import torch
from helpers import build_model, chat_batch

from lowres_safety import steering
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin

LAYER = 1


@pytest.fixture(scope="module")
def fitted_on_tiny():
    model = build_model("qwen2")
    prompts = load_builtin(["en", "de"], n_per_class=6)
    acts = extract(model, prompts, [LAYER], ("t_post_inst",), cache=False, progress=False)
    return model, acts, prompts


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
    f = steering.fit_methods(acts, ["en", "de"], model.cfg.n_layers, layer=LAYER, lam=2.0, scope=scope)
    assert f.scope == scope and f.alpha > 0
    delta, _ = shifts(model, steering.method_hooks(f, "addition"), prompts.texts[:3], f.direction)
    torch.testing.assert_close(delta[:, -1], torch.full((3,), f.alpha), atol=1e-3, rtol=1e-4)
    expected_rest = f.alpha if scope == "all" else 0.0
    torch.testing.assert_close(delta[:, :-1], torch.full_like(delta[:, :-1], expected_rest), atol=1e-3, rtol=1e-4)


def test_gate_with_scope_all_steers_or_ablates_every_position_of_a_row(fitted_on_tiny):
    model, acts, prompts = fitted_on_tiny
    f = steering.fit_methods(acts, ["en", "de"], model.cfg.n_layers, layer=LAYER, scope="all")
    texts = prompts.texts
    delta, before = shifts(model, steering.method_hooks(f, "gate"), texts, f.direction)
    harmful = torch.as_tensor(f.gate.margin(acts.at(LAYER, "t_post_inst").float()) > 0)
    assert harmful.any() and (~harmful).any()  # both branches exercised
    torch.testing.assert_close(delta[harmful], torch.full_like(delta[harmful], f.alpha), atol=1e-3, rtol=1e-4)
    after = before + delta
    torch.testing.assert_close(after[~harmful], torch.zeros_like(after[~harmful]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="scope"):
        steering.fit_methods(acts, ["en"], model.cfg.n_layers, layer=LAYER, scope="prompt")
