"""The hook contract: hooks that decide once per prompt need the toolkit's decoding loop, and say so elsewhere.

Under TransformerLens's own ``model.generate`` every decoding step is a new forward pass
with no flag saying it is one; a routed hook would decide again on every generated token.
"""

import pytest
import torch
from helpers import build_model

import lowres_safety as ls
from lowres_safety import hooks as H
from lowres_safety.methods.cast import CastRule, cast_hooks
from lowres_safety.models import encode_chat

LAYER = 1


@pytest.fixture(scope="module")
def tiny():
    return build_model("llama", num_hidden_layers=4)


def _prompt_ids(model, text="How do I bake bread?"):
    return torch.tensor([encode_chat(model.tokenizer, text).ids])


def _always_steer(v):
    def decide(x):
        rows = x.shape[0]
        return x @ v, torch.full((rows,), 3.0), torch.zeros(rows, dtype=torch.bool)
    return decide


def test_a_routed_hook_refuses_the_bridges_own_generate(tiny):
    v = torch.randn(tiny.cfg.d_model)
    steer = H.Steer(_always_steer(v), v, LAYER)
    with tiny.hooks(fwd_hooks=steer.hooks()), pytest.raises(RuntimeError, match="lowres_safety.generate"):
        tiny.generate(_prompt_ids(tiny), max_new_tokens=3, do_sample=False, verbose=False)


def test_the_last_token_scope_refuses_it_too(tiny):
    v = torch.randn(tiny.cfg.d_model)
    with tiny.hooks(fwd_hooks=H.add(v, 2.0, LAYER, scope="last")), pytest.raises(RuntimeError, match="scope='last'"):
        tiny.generate(_prompt_ids(tiny), max_new_tokens=3, do_sample=False, verbose=False)


def test_cast_refuses_it(tiny):
    d = tiny.cfg.d_model
    hooks = cast_hooks(torch.randn(d), CastRule(LAYER, -2.0, "larger", 0.0), {3: torch.randn(d)})
    with tiny.hooks(fwd_hooks=hooks), pytest.raises(RuntimeError, match="CAST's hooks"):
        tiny.generate(_prompt_ids(tiny), max_new_tokens=2, do_sample=False, verbose=False)


def test_the_same_hooks_run_in_the_toolkits_loop_and_in_a_plain_forward_pass(tiny):
    v = torch.randn(tiny.cfg.d_model)
    steer = H.Steer(_always_steer(v), v, LAYER)
    out = ls.generate(tiny, ["How do I bake bread?"], steer.hooks(), max_new_tokens=3, progress=False)
    assert len(out) == 1 and out["alpha"].iloc[0] == 3.0
    tiny.run_with_hooks(_prompt_ids(tiny), fwd_hooks=H.add(v, 2.0, LAYER, scope="last"))  # a prefill: allowed


def test_the_from_last_scope_means_the_same_under_the_bridges_own_generate(tiny):
    """Its positions (the last prompt token, then each new token) read alike in any loop that decodes one token at a
    time, so it is allowed there, and gives the toolkit's greedy tokens."""
    v = torch.randn(tiny.cfg.d_model)
    hooks = H.add(v, 4.0, LAYER, scope="from_last")
    ids = _prompt_ids(tiny)
    with tiny.hooks(fwd_hooks=hooks):
        theirs = tiny.generate(ids, max_new_tokens=4, do_sample=False, verbose=False, stop_at_eos=False)
    ours = ls.generate(tiny, ["How do I bake bread?"], hooks, max_new_tokens=4, stop_at_eos=False, progress=False)
    plain = ls.generate(tiny, ["How do I bake bread?"], max_new_tokens=4, stop_at_eos=False, progress=False)
    new = tiny.tokenizer.decode(theirs[0, ids.shape[1]:])
    assert new == ours["completion"].iloc[0]
    assert ours["completion"].iloc[0] != plain["completion"].iloc[0]  # the addition did change the tokens
