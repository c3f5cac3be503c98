"""AdaSteer's and CAST's per-prompt paths through the real generation loop, against hand computations.

Each hook is surrounded by two captures on the same hook point (hooks on one point run in
the order they are added), so what a method added on every pass, prefill and decoding
steps, is read in the run itself, whatever tokens the steering made the model choose.
"""

import numpy as np
import pytest
import torch
from helpers import build_model

import lowres_safety as ls
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


def _upstream_files(folder, vectors, hd, beta_a, beta_b, rd):
    """Upstream AdaSteer's layout: pickled numpy arrays, classes [layer, n, d] (two copies of each anchor)."""
    import pickle

    for part, a, b in (("RD", vectors.mu_a, vectors.mu_b), ("HD", beta_a, beta_b)):
        (folder / part).mkdir(parents=True)
        for name, x in (("class_a", a), ("class_b", b)):
            with open(folder / part / f"{name}.pkl", "wb") as fh:
                pickle.dump(torch.stack([x, x], 1).numpy(), fh)
    for name, x in (("RD/mean_diff.pkl", rd), ("HD/proj.pkl", hd)):
        with open(folder / name, "wb") as fh:
            pickle.dump(x.numpy(), fh)


@pytest.mark.parametrize("source", ["built here", "upstream files"])
def test_adasteer_reads_each_coefficient_at_its_layer_with_its_anchors_and_adds_it_while_decoding(tiny, source,
                                                                                                   tmp_path):
    """Catches: α read at the β layer (or at the steering layer), anchors a and b swapped (s becomes 100 − s), the
    coefficient of another row, or steering the prefill. The rules are linear (no clamp) and the anchors differ per
    layer, so each of those changes the rows' added vectors. With upstream's files, β reads HD's own anchors and
    scales HD's own vector, and RD is the file's mean_diff: a loader that reused RD's would fail."""
    n_layers = tiny.cfg.n_layers
    prefill = _prefill_states(tiny, range(n_layers))
    # anchors near the prompts' own states (rows 0 and 2 of the batch), different at each layer
    vectors = A.AdaSteerVectors(torch.stack([prefill[layer][0, -1] for layer in range(n_layers)]),
                                torch.stack([prefill[layer][2, -1] for layer in range(n_layers)]))
    beta_a, beta_b, rd, hd = vectors.mu_a, vectors.mu_b, vectors.rd, vectors.rd
    if source == "upstream files":
        g = torch.Generator().manual_seed(4)
        beta_a = torch.stack([prefill[layer][1, -1] for layer in range(n_layers)])
        beta_b = torch.stack([prefill[layer][3, -1] for layer in range(n_layers)])
        rd, hd = 1.1 * vectors.rd, torch.randn(vectors.rd.shape, generator=g)
        _upstream_files(tmp_path / "m", vectors, hd, beta_a, beta_b, rd)
        vectors = A.AdaSteerVectors.from_upstream(tmp_path / "m")
    alpha, beta = ClampedLinear(0.01, offset=3.0), ClampedLinear(-0.004, bias=0.2)
    hooks = A.adasteer_hooks(vectors, 1, alpha, 2, beta)
    store = {}
    generate(tiny, TEXTS, _around(0, hooks, store), max_new_tokens=3, batch_size=8, stop_at_eos=False,
             progress=False)

    def s(h, a, b):  # the scaled distance, written out: 0 at anchor a, 100 at anchor b
        a, b = a.double(), b.double()
        return 100 * ((h.double() - a) @ (b - a)) / ((b - a) @ (b - a))

    c_alpha = 0.01 * (s(prefill[1][:, -1], vectors.mu_a[1], vectors.mu_b[1]) + 3.0)
    c_beta = -0.004 * s(prefill[2][:, -1], beta_a[2], beta_b[2]) + 0.2
    assert (c_alpha + c_beta).std() > 0.05  # rows differ, so a row mix-up shows
    before, after = store["before"], store["after"]
    assert len(before) == 3  # the prefill and two decoding steps
    torch.testing.assert_close(after[0], before[0])  # the prefill is read, not steered
    for step in (1, 2):
        added = after[step][:, -1].double() - before[step][:, -1].double()
        expected = c_alpha[:, None] * rd[0].double() + c_beta[:, None] * hd[0].double()
        torch.testing.assert_close(added, expected, atol=1e-4, rtol=1e-4)


def test_upstream_pickles_are_read_as_numpy_arrays_and_nothing_else(tmp_path):
    """Catches: a loader that unpickles whatever the file holds (a pickle can run code when loaded)."""
    import os
    import pickle

    from lowres_safety.methods.upstream import read_numpy_pickle

    class Sneaky:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(tmp_path / "bad.pkl", "wb") as fh:
        pickle.dump(Sneaky(), fh)
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        read_numpy_pickle(tmp_path / "bad.pkl")
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "ok.pkl", "wb") as fh:
        pickle.dump(np.arange(6, dtype=np.float16).reshape(2, 3), fh)
    assert read_numpy_pickle(tmp_path / "ok.pkl").tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(FileNotFoundError, match="lacks"):
        A.AdaSteerVectors.from_upstream(tmp_path)


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


def test_the_end_of_user_turn_states_are_each_prompts_last_token_without_the_generation_prompt(tiny):
    """Catches: the behaviour read at a padding position, or with the generation prompt (the released adapted CAST
    reads the end of the user turn). Reference: each prompt run alone."""
    got = C.prompt_states(tiny, as_prompt_set(TEXTS), (1, 2), pool="last", batch_size=3)
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([encode_chat(tiny.tokenizer, text, generation_prompt=False).ids])
        _, cache = tiny.run_with_cache(ids)
        for layer in (1, 2):
            torch.testing.assert_close(got[layer][i], cache[f"blocks.{layer}.hook_resid_post"][0, -1].float(),
                                       atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def adapted_cast(tiny):
    """CAST fitted on en, its adaptation pool sw + yo (4 per class each, pooled), a target de tuned on its own prompts."""
    from lowres_safety.activations import extract
    from lowres_safety.data import load_builtin
    from lowres_safety.methods.base import Context

    prompts = load_builtin(["en", "de", "sw", "yo"], n_per_class=8, seed=0)
    acts = extract(tiny, prompts, "all", ("t_post_inst",), progress=False)
    source, pool = acts.where(language="en"), acts.where(language=["sw", "yo"])
    ctx = Context(model=tiny, acts=source, layer=1, direction=torch.ones(tiny.cfg.d_model), alpha=1.0,
                  n_layers=tiny.cfg.n_layers, seed=3, adaptation=pool)
    cast = C.Cast.fit(ctx, condition_layers=(0, 1), behaviour_layers=(2,))
    de = acts.where(language="de")
    # unbalanced tuning prompts (one harmful, eight harmless): a grid tuned on them cannot agree with the
    # balanced in-sample one, where calling every prompt harmful already scores F1 = 2/3
    de_prompts = prompts.where(language="de")
    tune = ls.PromptSet(de_prompts.frame.drop(index=de_prompts.frame.index[de_prompts.frame.subset == "harmful"][1:]),
                        "de, one harmful")
    return cast, pool, Target("de", de, de, tune), Target("ar-like", de, de, None)


def test_adapted_cast_is_fitted_on_the_pooled_low_resource_examples_and_tuned_on_the_targets_val(tiny, adapted_cast):
    """Catches: the adapted variant fitted on the target's own pool (the pre-0.3 default) or on the zero-shot
    vectors, tuned in-sample although the target has val prompts, or its behaviour read at t_post_inst.
    Reference: the released recipe written out: 4 + 4 per low-resource language pooled, pairwise principal
    components of the mean-pooled and end-of-user-turn states, the grid search on the target's tuning prompts."""
    from lowres_safety.methods.base import per_language_sample

    cast, pool, target, untuned = adapted_cast
    condition, rule, behaviour = cast.fitted_for(target, 4)
    shots = per_language_sample(pool, 4, 3)
    assert shots.prompts.languages == ["sw", "yo"] and len(shots.prompts) == 16
    y = shots.prompts.labels.astype(bool)
    pooled = C.mean_pooled_states(tiny, shots.prompts, (0, 1))
    conditions = {layer: C.pairwise_pc(pooled[layer][y], pooled[layer][~y]) for layer in (0, 1)}
    tuned = C.mean_pooled_states(tiny, target.tune, (0, 1))
    sims = {layer: C.condition_similarity(tuned[layer], conditions[layer]).numpy() for layer in (0, 1)}
    assert rule == C.select_condition(sims, target.tune.labels.astype(int))
    torch.testing.assert_close(condition, conditions[rule.layer])
    last = C.prompt_states(tiny, shots.prompts, (2,), pool="last")[2]
    torch.testing.assert_close(behaviour[2], C.pairwise_pc(last[y], last[~y]))
    assert not torch.allclose(behaviour[2], cast.zero_shot[2][2])
    assert cast.extras(target, 4)["cast_tuned_on"] == "target val"
    assert cast.extras(target, 4)["adapted_from"] == "pooled sw,yo"
    # one pooled fit for every target: only the tuning differs
    other_condition, _, other_behaviour = cast.fitted_for(untuned, 4)
    torch.testing.assert_close(other_behaviour[2], behaviour[2])
    assert cast.extras(untuned, 4)["cast_tuned_on"] == "fit prompts"
    assert cast.fitted_for(untuned, 4)[1] != rule  # so tuning in-sample would fail the check above


def _two_point_acts(n_layers: int, languages=("en",)):
    """Every harmful prompt at e0, every harmless one at 0, at every layer: μ_harmful − μ_harmless = e0."""
    import pandas as pd

    from lowres_safety.activations import ActivationSet

    rows, xs = [], []
    for lang in languages:
        for subset, value in (("harmful", 1.0), ("harmless", 0.0)):
            for j in range(4):
                x = torch.zeros(n_layers, 1, 3)
                x[:, 0, 0] = value
                xs.append(x)
                rows.append({"id": f"{lang}-{subset}-{j}", "text": "t", "language": lang, "subset": subset,
                             "split": "x", "source_id": f"{subset}{j}"})
    return ActivationSet(torch.stack(xs), ls.PromptSet(pd.DataFrame(rows), "two points"), tuple(range(n_layers)),
                         ("t_post_inst",))


# (α + β) · RD projected on μ_harmful − μ_harmless, at a harmful and a harmless prompt, from the released constants
# by hand: with the adapted vectors (a = harmful, RD toward harmful) Llama's −0.08 + −0.75 pushes away from refusal,
# Qwen's −0.2 + 0.4 toward it, Gemma's −0.02 − 0.06 away at harmful and +0.06 + 0.02 toward at harmless; with the
# zero-shot vectors (upstream's meaning: RD = harmless − harmful, toward compliance) the same constants push a
# harmful prompt toward refusal for Llama (+0.83) and Qwen (+0.8), and toward compliance for Gemma (−0.08).
SIGNS = {
    "meta-llama/Llama-3.1-8B-Instruct": {"adapted": (-0.83, -0.83), "zero_shot": (0.83, 0.83)},
    "Qwen/Qwen2.5-7B-Instruct": {"adapted": (0.2, -0.8), "zero_shot": (0.8, -0.2)},
    "google/gemma-2-9b-it": {"adapted": (-0.08, 0.08), "zero_shot": (-0.08, 0.08)},
}


@pytest.mark.parametrize("model_id", sorted(SIGNS))
def test_adasteer_pushes_as_released_per_preset_model(model_id):
    """Catches: the zero-shot vectors built the adapted way (a = harmful: the sign flipped at k = 0, which the
    released run took from upstream's compliance-pointing files), the adapted ones built upstream's way (not what
    the released adapted script does), or the adapted rules swapped for the zero-shot ones. Hand case: harmful
    prompts at e0, harmless at 0, so μ_harmful − μ_harmless = e0 at every layer."""
    from lowres_safety.methods.base import Context
    from lowres_safety.presets import PRESETS

    preset = PRESETS[model_id]
    n_layers = preset.adasteer_beta_layer + 2
    acts = _two_point_acts(n_layers)
    ctx = Context(model=None, acts=acts, layer=preset.gate_layer, direction=torch.ones(3), alpha=1.0,
                  n_layers=n_layers, preset=preset, adaptation=_two_point_acts(n_layers, ("yo",)))
    ada = A.AdaSteer.fit(ctx)
    target = Target("yo", acts, acts)
    e0 = torch.tensor([1.0, 0.0, 0.0])
    for variant, k in (("zero_shot", 0), ("adapted", 32)):
        vectors = ada.vectors_for(target, k)
        alpha_layer, alpha_rule, beta_layer, beta_rule = ada.rules_for(k)
        for prompt, expected in zip((e0, torch.zeros(3)), SIGNS[model_id][variant]):
            coef = (alpha_rule(A.scaled_distance(prompt[None], vectors.mu_a[alpha_layer], vectors.mu_b[alpha_layer]))
                    + beta_rule(A.scaled_distance(prompt[None], vectors.mu_a[beta_layer], vectors.mu_b[beta_layer])))
            push = float(coef[0] * vectors.rd[alpha_layer] @ e0)
            assert push == pytest.approx(expected, abs=1e-6), (variant, prompt)


def test_adapted_adasteer_vectors_come_from_the_pooled_low_resource_examples_for_every_target():
    """Catches: adapted vectors built from the target's own pool (the pre-0.3 default) or rebuilt per target, or
    built with upstream's orientation. The pool (sw, yo) sits elsewhere than any target's prompts."""
    from lowres_safety.methods.base import Context

    n_layers = 4
    source = _two_point_acts(n_layers)
    pool = _two_point_acts(n_layers, ("sw", "yo"))
    pool.acts[:, :, :, 1] += 5.0  # the pool's prompts are shifted along e1: its means differ from a target's
    ctx = Context(model=None, acts=source, layer=1, direction=torch.ones(3), alpha=1.0, n_layers=n_layers,
                  adaptation=pool)
    ada = A.AdaSteer.fit(ctx)
    a, b = Target("ar", source, source), Target("ko", source, source)
    assert ada.vectors_for(a, 32) is ada.vectors_for(b, 32)
    torch.testing.assert_close(ada.vectors_for(a, 32).mu_a, torch.tensor([1.0, 5.0, 0.0]).expand(n_layers, 3))
    torch.testing.assert_close(ada.vectors_for(a, 32).mu_b, torch.tensor([0.0, 5.0, 0.0]).expand(n_layers, 3))
    assert ada.extras(a, 32)["adapted_from"] == "pooled sw,yo" and ada.extras(a, 0)["adapted_from"] == "source languages"
    own = A.AdaSteer.fit(ctx, adapted_from="target")
    torch.testing.assert_close(own.vectors_for(a, 32).mu_a, torch.tensor([1.0, 0.0, 0.0]).expand(n_layers, 3))
