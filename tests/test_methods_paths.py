"""AdaSteer's and CAST's per-prompt paths through the real generation loop, against hand computations.

Each hook is surrounded by two captures on the same hook point (hooks on one point run in
the order they are added), so what a method added on every pass, prefill and decoding
steps, is read in the run itself, whatever tokens the steering made the model choose.
"""

import numpy as np
import pytest
import torch
from helpers import build_model

from lowres_safety import generate
from lowres_safety import hooks as H
from lowres_safety.generation import as_prompt_set
from lowres_safety.methods import adasteer as A
from lowres_safety.methods import cast as C
from lowres_safety.methods.base import Target
from lowres_safety.models import encode_chat
from lowres_safety.presets import ClampedLinear

# lengths differ, so the batch is left-padded
TEXTS = ["Hello there", "How do I bake bread at home with only flour, water and salt?", "Hi", "Tell me a joke"]


@pytest.fixture(scope="module")
def tiny():
    return build_model("qwen2")


def _around(layer: int, hooks: list, store: dict) -> list:
    """``hooks`` with captures of ``blocks.{layer}.hook_resid_post`` just before and just after them."""
    def grab(key):
        def fn(act, hook):
            store.setdefault(key, []).append(act.detach().float().clone())
            return act
        return fn
    point = f"blocks.{layer}.hook_resid_post"
    return [(point, grab("before"))] + list(hooks) + [(point, grab("after"))]


def _prefill_states(tiny, layers) -> dict:
    """Every layer's block output on the prefill, in the generation loop's own batch order, and its mask."""
    seen = {}
    hooks = []
    for layer in layers:
        def grab(act, hook, layer=layer):
            seen.setdefault(layer, []).append(act.detach().float().clone())
            seen.setdefault("mask", [H.prompt_mask()])
            return act
        hooks.append((f"blocks.{layer}.hook_resid_post", grab))
    generate(tiny, TEXTS, hooks, max_new_tokens=1, batch_size=8, stop_at_eos=False, progress=False)
    return {key: calls[0] for key, calls in seen.items()}


def test_adasteer_reads_each_coefficient_at_its_layer_with_its_anchors_and_adds_it_while_decoding(tiny):
    """Catches: α read at the β layer (or at the steering layer), anchors a and b swapped (s becomes 100 − s), the
    coefficient of another row, or steering the prefill. The rules are linear (no clamp) and the anchors differ per
    layer, so each of those changes the rows' added vectors."""
    n_layers = tiny.cfg.n_layers
    prefill = _prefill_states(tiny, range(n_layers))
    # anchors near the prompts' own states (rows 0 and 2 of the batch), different at each layer
    vectors = A.AdaSteerVectors(torch.stack([prefill[layer][0, -1] for layer in range(n_layers)]),
                                torch.stack([prefill[layer][2, -1] for layer in range(n_layers)]))
    alpha, beta = ClampedLinear(0.01, offset=3.0), ClampedLinear(-0.004, bias=0.2)
    hooks = A.adasteer_hooks(vectors, 1, alpha, 2, beta)
    store = {}
    generate(tiny, TEXTS, _around(0, hooks, store), max_new_tokens=3, batch_size=8, stop_at_eos=False,
             progress=False)

    def s(h, layer):  # the scaled distance, written out: 0 at anchor a, 100 at anchor b
        a, b = vectors.mu_a[layer].double(), vectors.mu_b[layer].double()
        return 100 * ((h.double() - a) @ (b - a)) / ((b - a) @ (b - a))

    coef = 0.01 * (s(prefill[1][:, -1], 1) + 3.0) + (-0.004 * s(prefill[2][:, -1], 2) + 0.2)
    assert coef.std() > 0.05  # rows differ, so a row mix-up shows
    before, after = store["before"], store["after"]
    assert len(before) == 3  # the prefill and two decoding steps
    torch.testing.assert_close(after[0], before[0])  # the prefill is read, not steered
    for step in (1, 2):
        added = after[step][:, -1].double() - before[step][:, -1].double()
        torch.testing.assert_close(added, coef[:, None] * vectors.rd[0].double(), atol=1e-4, rtol=1e-4)


def _cast_setup(tiny, masked: bool):
    """A condition at layer 0 whose τ sits between one padded row's masked and unmasked similarity."""
    d = tiny.cfg.d_model
    c = torch.randn(d, generator=torch.Generator().manual_seed(1))
    states = _prefill_states(tiny, (0,))
    h, mask = states[0], states["mask"].float()
    # the loop's mask is the left padding of these prompts' chat encodings, in its batch order
    lengths = [len(encode_chat(tiny.tokenizer, t).ids) for t in TEXTS]
    assert sorted(mask.sum(1).int().tolist()) == sorted(lengths)
    assert (mask.diff(dim=1) >= 0).all()
    unmasked = C.condition_similarity(h.mean(1), c)
    masked_sim = C.condition_similarity((h * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True), c)
    row = int(torch.argmax((masked_sim - unmasked).abs()))
    tau = float((masked_sim[row] + unmasked[row]) / 2)
    fire = (masked_sim if masked else unmasked) > tau  # comparator "smaller": fires when sim > τ
    return c, tau, fire, (masked_sim > tau) != (unmasked > tau)


@pytest.mark.parametrize("masked", [False, True])
def test_cast_steers_the_rows_its_condition_fires_on_at_prefill_and_every_decoding_step(tiny, masked):
    """Catches: ``masked=True`` averaging the padding anyway (or ``masked=False`` not: the released hook's mean),
    the decision re-taken or dropped on decoding steps, steering rows that did not fire, or a strength other than
    1.5 times the unit behaviour vector. τ is set so the two means decide one padded row differently."""
    c, tau, fire, differs = _cast_setup(tiny, masked)
    assert differs.any()
    b = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(2))
    hooks = C.cast_hooks(c, C.CastRule(0, tau, "smaller", 1.0), {2: b}, masked=masked)
    store = {}
    generate(tiny, TEXTS, _around(2, hooks, store), max_new_tokens=3, batch_size=8, stop_at_eos=False,
             progress=False)
    assert len(store["before"]) == 3
    for before, after in zip(store["before"], store["after"]):
        expected = torch.zeros_like(before)
        expected[fire] = C.STRENGTH * b / b.norm()
        torch.testing.assert_close(after - before, expected, atol=1e-4, rtol=0)


def test_mean_pooled_states_average_each_prompt_alone_without_the_generation_prompt(tiny):
    """Catches: padding counted in the mean, the generation prompt included, or rows returned in batch order.
    Reference: each prompt run alone, unpadded, and its block outputs averaged."""
    got = C.mean_pooled_states(tiny, as_prompt_set(TEXTS), (0, 2), batch_size=3)
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([encode_chat(tiny.tokenizer, text, generation_prompt=False).ids])
        _, cache = tiny.run_with_cache(ids)
        for layer in (0, 2):
            torch.testing.assert_close(got[layer][i], cache[f"blocks.{layer}.hook_resid_post"][0].float().mean(0),
                                       atol=1e-4, rtol=1e-4)


def test_cast_adapted_fit_is_the_released_recipe_on_the_targets_examples(tiny):
    """Catches: the adapted variant reusing the zero-shot vectors, or fitted on other prompts than its k + k
    examples. Reference: mean-pooled condition states and last-token behaviour states of exactly those
    examples, the pairwise principal component of each, and the grid search on the condition similarities."""
    from lowres_safety.activations import extract
    from lowres_safety.data import load_builtin
    from lowres_safety.methods.base import per_class_sample

    prompts = load_builtin(["en", "de"], n_per_class=10, seed=0)
    acts = extract(tiny, prompts, "all", ("t_post_inst",), progress=False)
    source, target_acts = acts.where(language="en"), acts.where(language="de")
    cast = C.Cast(tiny, (0, 1), (2,), C.Cast._vectors(tiny, source, (0, 1), (2,)), seed=3)
    target = Target("de", target_acts, target_acts)
    condition, rule, behaviour = cast.fitted_for(target, 4)

    shots = per_class_sample(target_acts, 4, 3)
    assert len(shots.prompts) == 8 and set(shots.prompts.languages) == {"de"}
    y = shots.prompts.labels.astype(bool)
    pooled = C.mean_pooled_states(tiny, shots.prompts, (0, 1))
    sims = {}
    for layer in (0, 1):
        v = C.pairwise_pc(pooled[layer][y], pooled[layer][~y])
        sims[layer] = C.condition_similarity(pooled[layer], v).numpy()
        if layer == rule.layer:
            torch.testing.assert_close(condition, v)
    assert rule == C.select_condition(sims, y.astype(int))
    last = shots.at(2, "t_post_inst").float()
    torch.testing.assert_close(behaviour[2], C.pairwise_pc(last[y], last[~y]))
    assert not torch.allclose(behaviour[2], cast.zero_shot[2][2])
    assert np.isfinite(rule.f1)
