"""The reports' causal checks: selection's candidates never see the validation prompts; transfer rows and layer."""

import torch
from helpers import build_model

from lowres_safety import causal
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin, sample_sources
from lowres_safety.directions import diff_of_means
from lowres_safety.evaluation import first_token_ids
from lowres_safety.pipelines import causal_report


def test_check_holds_out_selection_prompts_and_measures_transfer_at_the_layer_used():
    tiny = build_model("qwen2")
    prompts = load_builtin(["en", "de", "sw"], n_per_class=4)
    acts = extract(tiny, prompts, "all", ("t_post_inst",), progress=False)
    tokens = first_token_ids(tiny.tokenizer, ["I'm sorry", "Sorry"])
    found = causal.check(tiny, acts, prompts.where(language=["de", "sw"]), ["en", "de"], tokens, reference="en",
                         gate_layer=1, n_select=2, seed=3, progress=False)
    held = sample_sources(acts.where(language="en").prompts.frame, 2, 3, "")["source_id"]
    fit = acts.where(language=["en", "de"])
    fit = fit.where(id=fit.prompts.frame[~fit.prompts.frame["source_id"].isin(held)]["id"].tolist())
    expected = diff_of_means(fit)[:, 0].norm(dim=-1)
    assert len(fit) == 2 * 2 * 2  # 2 languages x 2 classes x (4 - 2 held out)
    assert torch.allclose(torch.tensor(found.selection["norm"].to_numpy(), dtype=torch.float32), expected, atol=1e-4)
    assert found.transfer_layer == (found.chosen_layer if found.chosen_layer is not None else 1)
    assert set(found.transfer["source"]) == {"en", "de", "sw"} and set(found.transfer["target"]) == {"de", "sw"}
    titles = [s.title for s in causal_report.sections(found, first=5)]
    assert titles[0].startswith("5. Which direction") and titles[1].startswith("6. Does one language")


def test_selection_keeps_half_of_a_small_set_for_the_candidates():
    tiny = build_model("qwen2")
    prompts = load_builtin(["en", "sw"], n_per_class=2)
    acts = extract(tiny, prompts, "all", ("t_post_inst",), progress=False)
    tokens = first_token_ids(tiny.tokenizer, ["Sorry"])
    found = causal.check(tiny, acts, prompts, ["en"], tokens, reference="en", gate_layer=1, n_select=8,
                         progress=False)
    assert found.n_select == 1 and len(found.selection) == tiny.cfg.n_layers


def test_a_language_without_a_direction_of_its_own_gets_no_transfer_row():
    """A representation failure by construction (identical activations for both classes, as under a script
    lesion) has a zero difference of means: it is left out of the rows, said so, and still measured as a target."""
    from dataclasses import replace

    tiny = build_model("qwen2")
    prompts = load_builtin(["en", "sw"], n_per_class=4)
    acts = extract(tiny, prompts, "all", ("t_post_inst",), progress=False)
    sw = torch.tensor((prompts.frame["language"] == "sw").to_numpy())
    blind = acts.acts.clone()
    blind[sw] = acts.acts[sw].mean(0)  # both classes read the same
    acts = replace(acts, acts=blind)
    tokens = first_token_ids(tiny.tokenizer, ["Sorry"])
    found = causal.check(tiny, acts, prompts, ["en"], tokens, reference="en", gate_layer=1, n_select=1,
                         progress=False)
    assert set(found.transfer["source"]) == {"en"} and set(found.transfer["target"]) == {"en", "sw"}
    assert "No row for sw" in found.transfer_note
    assert found.transfer_note in causal_report.sections(found)[1].intro
