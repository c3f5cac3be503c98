"""The generation-based sweeps on a tiny bridge: each run's answers are those of the hooks it names.

A recording judge sees every answer a sweep generates; the reference answers come from
``generate`` under hooks built here by hand (the released placements).
"""

import pandas as pd
import pytest
import torch
from helpers import build_model

import lowres_safety as ls
from lowres_safety import directions as dirs
from lowres_safety import hooks as H
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin


@pytest.fixture(scope="module")
def setup():
    model = build_model("qwen2", num_hidden_layers=4)
    prompts = load_builtin(["en", "de", "sw"], n_per_class=2, seed=0)
    acts = extract(model, prompts, "all", ("t_post_inst",), progress=False)
    return model, prompts, acts


class Recorder:
    """A judge that keeps every answer it is shown (in order) and calls even-length answers refusals."""

    def __init__(self):
        self.seen = []

    def __call__(self, prompts, completions, languages) -> list[bool]:  # the batch form: every answer, in order
        self.seen += list(zip(languages, prompts, completions, strict=True))
        return [len(c) % 2 == 0 for c in completions]


def _reference(model, prompts, hooks):
    out = ls.generate(model, prompts.where(subset="harmful"), hooks, max_new_tokens=4, progress=False)
    return sorted(zip(out["language"], out["text"], out["completion"], strict=True))


def test_strength_sweep_adds_the_raw_lambda_from_the_last_prompt_token(setup):
    """Catches: λ scaled (the released α is λ itself), another layer, the last token only, harmless prompts
    generated."""
    model, prompts, acts = setup
    # a random tiny model's answers collapse to one token under a large push: λ = 0.1 still tells layers and sizes apart
    v = dirs.unit(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))) * 3
    judge = Recorder()
    table = ls.analyses.strength_sweep(model, prompts, v, 2, strengths=(0.0, 0.1), judge=judge, max_new_tokens=4,
                                       progress=False)
    assert list(table.columns) == ["strength", "language", "tier", "refusal", "n"] and set(table["n"]) == {2}
    half = len(judge.seen) // 2
    assert sorted(judge.seen[:half]) == _reference(model, prompts, [])
    assert sorted(judge.seen[half:]) == _reference(model, prompts, H.add(dirs.unit(v), 0.1, 2, scope="from_last"))
    assert sorted(judge.seen[half:]) != sorted(judge.seen[:half])  # the addition changed something


def test_peak_strengths_take_the_smallest_lambda_on_ties():
    table = pd.DataFrame({"strength": [0.0, 0.5, 1.0, 0.0, 0.5, 1.0], "language": ["sw"] * 3 + ["en"] * 3,
                          "tier": ["low"] * 3 + ["high"] * 3, "refusal": [10, 50, 50, 90, 80, 70], "n": 4})
    peaks = ls.analyses.peak_strengths(table).set_index("tier")["peak_strength"]
    assert peaks["low"] == 0.5 and peaks["high"] == 0.0


@pytest.mark.parametrize("anchored", [False, True])
def test_ablation_sweep_ablates_the_released_blocks_with_each_layers_direction(setup, anchored):
    """Catches: the per-layer sweep ablating more than block L, or the anchored one not keeping its range fixed
    while the direction moves; a direction from another layer or language."""
    model, prompts, acts = setup
    judge = Recorder()
    table = ls.analyses.ablation_sweep(model, prompts, acts, layers=[1, 2], sources=("en",), anchored=anchored,
                                       layer_range=(2, 10), judge=judge, max_new_tokens=4, progress=False)
    assert sorted(set(table["layer"])) == [-1, 1, 2] and set(table["source"]) == {"none", "en"}
    per_run = len(judge.seen) // 3
    en = acts.where(language="en")
    y = en.prompts.labels.astype(bool)
    for i, layer in enumerate([1, 2], start=1):
        v = en.acts[y, layer, 0].mean(0) - en.acts[~y, layer, 0].mean(0)
        blocks = [2, 3] if anchored else [layer]
        expected = _reference(model, prompts, H.ablate(v, blocks, sites=("hook_resid_post",)))
        assert sorted(judge.seen[i * per_run:(i + 1) * per_run]) == expected, layer
