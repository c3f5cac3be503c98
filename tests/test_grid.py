"""The intervention grid and the lean bridge: equal to whole bridge passes to 1e-4, on every family and SmolLM2."""

import warnings

import numpy as np
import pytest
import torch
from helpers import FAMILIES, build_model

import lowres_safety.grid as G
from lowres_safety import dose_response as D
from lowres_safety import evaluation as E
from lowres_safety import hooks as H
from lowres_safety._runtime.lean import lean
from lowres_safety._runtime.prefix import Prefix, expand
from lowres_safety.data import load_builtin
from lowres_safety.generation import encoded_prompts, prompt_batches
from lowres_safety.grid import entry_block, next_token_grid, token_summary


@pytest.fixture(scope="module")
def prompts():
    return load_builtin(["en", "yo"], n_per_class=2, seed=1)  # yo tokenizes long: real padding in each batch


@torch.no_grad()
def whole_pass(model, prompts, hooks, batch_size=3):
    """The plain path: the bridge's own forward per batch, every hook point live, logits everywhere."""
    out = None
    with model.hooks(fwd_hooks=list(hooks)):
        for idx, ids, mask in prompt_batches(model, prompts, batch_size, None):
            logits = model(ids, attention_mask=mask)[:, -1].float()
            out = torch.empty(len(prompts), logits.shape[-1]) if out is None else out
            out[torch.from_numpy(idx)] = torch.log_softmax(logits, -1)
    return out


def no_hooks_left(model):
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
    assert all(layer is block for layer, block in zip(model.original_model.model.layers, model.blocks))


def scale_embed(act, hook):
    return act * 1.5


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("mode", ["every position", "position_wise", "last_only"])
def test_grid_equals_whole_passes(family, mode, prompts):
    model = build_model(family)
    last_only, position_wise = mode == "last_only", mode == "position_wise"
    prefix = Prefix.shared(encoded_prompts(model, prompts), keep=2)
    assert prefix is not None and len(prefix) >= 4  # the promises make the shared opening run once: tested here
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    scope = "from_last" if last_only else "all"
    points = [[]] + [H.add(v, 6.0, layer, scope=scope) for layer in range(model.cfg.n_layers)]
    points += [H.add(v, 6.0, 1, site="hook_resid_pre", scope=scope),
               H.add(v, 3.0, 0, scope=scope) + H.add(v, 3.0, 2, scope=scope)]
    if not last_only:  # hooks that reach every position, or sit before block 0
        points += [H.ablate(v, range(model.cfg.n_layers)), [("hook_embed", scale_embed)]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the replay check must pass on every family: no fallback
        # (UserWarning: the grid's own; transformers 5.24 also deprecates past_key_values, which the bridge passes)
        got = next_token_grid(model, prompts, points, last_only=last_only, position_wise=position_wise,
                              batch_size=3)
    for g, point in enumerate(points):
        torch.testing.assert_close(got[g], whole_pass(model, prompts, point), atol=1e-4, rtol=0)
    assert (got[1:] - got[0]).abs().amax(dim=(1, 2)).min() > 1e-3  # every point moved the distribution
    no_hooks_left(model)


def test_dose_response_equals_the_plain_path_on_the_default_model(default_model):
    """The fast dose-response (grid) against one whole pass per point, for both scopes."""
    prompts = load_builtin(["en", "sw"], n_per_class=1, seed=2)
    tokens = E.first_token_ids(default_model.tokenizer, E.DEFAULT_OPENINGS)
    v = torch.randn(default_model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    layers, alphas = [2, 15, default_model.cfg.n_layers - 1], [0.0, 12.0]
    for scope in ("from_last", "all"):
        dose = D.dose_response(default_model, prompts, v, layers, alphas, tokens, scope=scope, batch_size=2,
                               progress=False).set_index(["layer", "alpha", "language"])
        base = whole_pass(default_model, prompts, [], batch_size=2)
        for layer in layers:
            steered = whole_pass(default_model, prompts, H.add(v, 12.0, layer, scope=scope), batch_size=2)
            odds = E.refusal_log_odds(steered, prompts, tokens).numpy()
            kl = (base.exp() * (base - steered)).sum(-1).clamp_min(0).numpy()
            for lang in ("en", "sw"):
                harmful = prompts.mask(language=lang, subset="harmful")
                harmless = prompts.mask(language=lang, subset="harmless")
                row = dose.loc[(layer, 12.0, lang)]
                assert row["mean_log_odds_harmful"] == pytest.approx(float(odds[harmful].mean()), abs=1e-4)
                assert row["kl_harmless"] == pytest.approx(float(kl[harmless].mean()), abs=1e-4)
                assert dose.loc[(layer, 0.0, lang), "kl_harmless"] == pytest.approx(0.0, abs=1e-6)
    no_hooks_left(default_model)


def test_lean_bridge_equals_the_bridge_on_the_default_model(default_model, prompts):
    """Only the hook points in use live: same hooked activations and logits as the full bridge."""
    v = torch.randn(default_model.cfg.d_model, generator=torch.Generator().manual_seed(4))
    idx, ids, mask = next(prompt_batches(default_model, prompts, 4, None))
    seen = []

    def grab(act, hook):
        seen.append(act.clone())
        return act

    fwd = H.add(v, 5.0, 7) + H.ablate(v, [20], sites=("hook_attn_out",)) + [("blocks.12.hook_resid_post", grab)]
    with torch.no_grad(), default_model.hooks(fwd_hooks=fwd):
        full = default_model(ids, attention_mask=mask)[:, -1]
        with lean(default_model):
            assert type(default_model.original_model.model.layers[3]).__name__ == "LlamaDecoderLayer"
            fast = default_model(ids, attention_mask=mask)[:, -1]
    torch.testing.assert_close(fast, full, atol=1e-4, rtol=0)
    a, b = seen
    torch.testing.assert_close(b[mask.bool()], a[mask.bool()], atol=1e-4, rtol=0)
    no_hooks_left(default_model)


def test_entry_block_names_the_first_block_a_point_changes():
    n = 6
    assert entry_block([], n) == n
    assert entry_block(H.add(torch.ones(4), 1.0, 2), n) == 3  # block 2's output is block 3's input
    assert entry_block(H.add(torch.ones(4), 1.0, 2, site="hook_resid_pre"), n) == 2
    assert entry_block(H.ablate(torch.ones(4), [4, 1]), n) == 1
    assert entry_block([("ln_final.hook_normalized", scale_embed)], n) == n
    assert entry_block([("hook_embed", scale_embed)], n) is None


def test_an_unknown_output_head_falls_back_to_whole_passes(monkeypatch, prompts):
    model = build_model("llama")
    real = G._Replay.__init__

    def wrong_head(self, model):
        real(self, model)
        self.cap = 1.0  # pretend the head soft-caps: the replay no longer matches the bridge

    monkeypatch.setattr(G._Replay, "__init__", wrong_head)
    v = torch.randn(model.cfg.d_model)
    points = [H.add(v, 4.0, 1)]
    with pytest.warns(UserWarning, match="whole passes"):
        got = next_token_grid(model, prompts, points, batch_size=3)
    torch.testing.assert_close(got[0], whole_pass(model, prompts, points[0]), atol=1e-4, rtol=0)


def test_prefix_cache_continues_each_prompt_as_a_whole_pass(prompts):
    """Rest-of-prompt rows after an expanded one-row prefix cache: the same last logits, and the cache untouched."""
    model = build_model("qwen2")
    encoded = encoded_prompts(model, prompts)
    prefix = Prefix.shared(encoded)
    assert prefix.ids == tuple(encoded[0][: len(prefix)]) and all(e[: len(prefix)] == prefix.ids for e in encoded)
    assert min(len(e) for e in encoded) > len(prefix)
    cache = prefix.run(model)
    before = [layer.keys.clone() for layer in cache.layers]
    idx, ids, mask = next(prompt_batches(model, prompts, 4, None, skip=len(prefix)))
    full, positions = prefix.inputs(mask)
    assert (positions[mask.bool()] >= len(prefix)).all() and (positions[:, -1] == full.sum(1) - 1).all()
    with torch.no_grad(), lean(model):  # as every caller runs it: Hugging Face's attention reads the cache
        got = model(ids, attention_mask=full, past_key_values=expand(cache, len(idx)), position_ids=positions)[:, -1]
    torch.testing.assert_close(torch.log_softmax(got, -1), whole_pass(model, prompts, [])[idx], atol=1e-4, rtol=0)
    assert all(torch.equal(layer.keys, old) for layer, old in zip(cache.layers, before))
    assert Prefix.shared([(1, 2, 3, 4, 5), (1, 2, 3, 4)]) is None  # fewer than 4 shared tokens leave one after them
    assert Prefix.shared([(1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5, 7)]).ids == (1, 2, 3, 4, 5)


def test_token_summary_keeps_the_tokens_and_the_kl():
    base = torch.log_softmax(torch.randn(3, 10), -1)
    logp = torch.log_softmax(torch.randn(3, 10), -1)
    reduce, columns = token_summary({"en": [7, 2], "sw": [2, 9]})
    out = reduce(logp, base)
    assert columns == {"en": [1, 0], "sw": [0, 2]}
    torch.testing.assert_close(out[:, :3], logp[:, [2, 7, 9]])
    np.testing.assert_allclose(out[:, 3], (base.exp() * (base - logp)).sum(-1).clamp_min(0), atol=1e-6)
