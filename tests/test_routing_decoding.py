"""Routed generation on decoding steps, both branches in one batch: exactly α·v̂ where it steers, no v̂ where it ablates.

Wrong implementations these catch: a ``Steer.read`` that returns its input untouched on
decoding steps (the steered row's difference is 0, not α·v̂); one that forgets the
ablation after the prefill (the ablated row keeps its projection); ``all_later_layers``
wired like ``gate_layer`` (the later layer's projection is not removed), or ``gate_layer``
reaching into later layers (the projection there is removed when it should not be).
"""

import pytest
import torch
from helpers import build_model

import lowres_safety as ls
from lowres_safety import hooks as H

LAYER, ALPHA = 1, 5.0
TEXTS = ["How do I bake bread at home?", "Tell me a short story about a cat."]


@pytest.fixture(scope="module")
def tiny():
    return build_model("llama", num_hidden_layers=4)


def _steer_first_row_ablate_second(v, scope):
    def decide(x):
        alpha = torch.tensor([ALPHA, 0.0], dtype=x.dtype)
        return x @ v, alpha, torch.tensor([False, True])
    return H.Steer(decide, v, LAYER, scope=scope)


def _capture(name, store):
    def fn(act, hook):
        if H.is_decoding():
            store.setdefault(name, []).append(act.detach().clone())
        return act
    return [(name, fn)]


@pytest.mark.parametrize("scope", ["from_last", "all"])
@pytest.mark.parametrize("ablation", ["gate_layer", "all_later_layers"])
def test_a_decoding_step_adds_alpha_v_on_steered_rows_and_leaves_no_v_on_ablated_rows(tiny, scope, ablation):
    torch.manual_seed(0)
    v = torch.randn(tiny.cfg.d_model)
    u = v / v.norm()
    steer = _steer_first_row_ablate_second(v, scope)
    before, after, later = {}, {}, {}
    gate_point, later_point = f"blocks.{LAYER}.hook_resid_post", f"blocks.{LAYER + 1}.hook_resid_post"
    hooks = (_capture(gate_point, before) + H.ABLATIONS[ablation](steer, tiny.cfg.n_layers, H.ARDITI_SITES)
             + _capture(gate_point, after) + _capture(later_point, later))
    ls.generate(tiny, TEXTS, hooks, max_new_tokens=4, batch_size=2, stop_at_eos=False, progress=False)
    assert len(before[gate_point]) == 3  # three decoding steps after the prefill's token
    for x0, x1, y in zip(before[gate_point], after[gate_point], later[later_point]):
        assert x0.shape[:2] == (2, 1)
        torch.testing.assert_close(x1[0] - x0[0], ALPHA * u.expand_as(x0[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(x1[1], H.project_out(x0[1], u), atol=1e-5, rtol=0)
        assert float((x1[1] @ u).abs().max()) < 1e-4
        later_projection = float((y[1] @ u).abs().max())
        if ablation == "all_later_layers":
            assert later_projection < 1e-4
        else:
            assert later_projection > 1e-3  # block L+1 writes the direction back; gate_layer leaves it


def test_the_decision_is_made_once_per_prompt_not_per_token(tiny):
    calls = []
    v = torch.randn(tiny.cfg.d_model)

    def decide(x):
        calls.append(x.shape[0])
        rows = x.shape[0]
        return x @ v, torch.full((rows,), ALPHA), torch.zeros(rows, dtype=torch.bool)

    steer = H.Steer(decide, v, LAYER)
    ls.generate(tiny, TEXTS, steer.hooks(), max_new_tokens=5, batch_size=2, stop_at_eos=False, progress=False)
    assert calls == [2]
