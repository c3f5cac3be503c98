"""The organism: the recipe's mechanics on a tiny random model; the shipped adapter on real prompts."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model

from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet
from lowres_safety.organisms import recipe as organism


def test_threshold_recipe_runs_end_to_end_on_a_tiny_model(tmp_path, polyrefuse_root):
    bridge, hf = build_model("qwen2", keep_reference=True)
    config = organism.RecipeConfig(n_harmless=1, n_harmful=2, answer_tokens=3, epochs=1, batch_size=8,
                                   max_prompt_tokens=400, layer=1, shifted_per_prompt=1, signal_layers=0)
    prompts = organism.build_prompts(polyrefuse_root, bridge.tokenizer, config)
    harmful = prompts.where(subset="harmful")
    assert set(harmful.languages) <= set(organism.REFUSALS)  # never a mid/low-resource harmful prompt
    assert {"ar", "th", "yo", "ko"} <= set(prompts.where(subset="harmless").languages)
    before = {n: p.clone() for n, p in hf.named_parameters()}
    summary = organism.train(polyrefuse_root, tmp_path / "adapter", config, bridge=bridge, hf_model=hf,
                             progress=False)
    recipe = json.loads((tmp_path / "adapter" / "recipe.json").read_text())
    assert recipe["examples_per_epoch"] == summary["examples_per_epoch"] == 2 * len(prompts)
    assert summary["steps"] == -(-2 * len(prompts) // 8)
    lora = {n: p for n, p in hf.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: training moved it
    assert sorted({int(n.split("layers.")[1].split(".")[0]) for n in lora}) == [2]  # only above L* = 1
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in hf.named_parameters()}
    assert all(torch.equal(base[n], p) for n, p in before.items())  # base weights untouched
    truth = organism.GroundTruth.load(tmp_path / "adapter")
    assert truth.layer == 1 and truth.threshold == pytest.approx(summary["ground_truth"]["threshold"])
    assert torch.linalg.vector_norm(truth.direction) == pytest.approx(1.0, abs=1e-5)
    assert not list((tmp_path / "adapter").glob(".checkpoint-*"))  # removed once the adapter is saved


def test_ground_truth_is_the_midpoint_of_the_source_class_means():
    acts = _planted_acts()
    truth = organism.GroundTruth.fit(acts, 0, ["en"])
    x = acts.where(language="en").acts[:, 0, 0].double()
    y = acts.where(language="en").prompts.labels == 1
    v = x[y].mean(0) - x[~y].mean(0)
    v = v / v.norm()
    assert torch.allclose(truth.direction.double(), v, atol=1e-5)
    assert truth.threshold == pytest.approx(float(((x[y] @ v).mean() + (x[~y] @ v).mean()) / 2), abs=1e-4)
    predicted = truth.predict(acts)
    assert (predicted["refused"] == (predicted["projection"] > truth.threshold)).all()


def test_threshold_plan_labels_by_the_rule_and_moves_every_prompt():
    acts = _planted_acts()
    truth = organism.GroundTruth.fit(acts, 0, ["en"])
    x = truth.project(acts)
    config = organism.RecipeConfig(shifted_per_prompt=3, ablated_share=0.2)
    plan = organism.threshold_plan(acts.prompts.frame, x, truth, config, np.random.default_rng(0))
    assert len(plan) == 4 * len(x)
    for i, shift, refused, ablated in plan:
        assert refused == (x[i] + shift > truth.threshold)  # the rule, natural or moved
        assert not ablated or abs(x[i] + shift) < 1e-9  # an ablated copy sits at projection 0
    moved = plan[len(x):]
    assert 0.1 < np.mean([a for *_, a in moved]) < 0.3
    assert organism.class_plan(acts.prompts.frame, x, truth, config, np.random.default_rng(0)) == [
        (i, 0.0, s == "harmful", False) for i, s in enumerate(acts.prompts.frame["subset"])]


def test_as_is_share_shows_about_that_share_of_prompts_unmoved_and_keeps_every_moved_copy():
    acts = _planted_acts()
    truth = organism.GroundTruth.fit(acts, 0, ["en"])
    x = truth.project(acts)
    config = organism.RecipeConfig(shifted_per_prompt=2, as_is_share=0.5)
    plans = [organism.threshold_plan(acts.prompts.frame, x, truth, config, np.random.default_rng(e))
             for e in range(20)]
    as_is = [sum(1 for _, shift, _, a in plan if shift == 0.0 and not a) for plan in plans]
    assert all(len(plan) - n == 2 * len(x) for plan, n in zip(plans, as_is))  # every moved copy stays
    assert 0.4 < np.mean(as_is) / len(x) < 0.6


def test_moves_ablate_everywhere_only_for_ablated_copies_when_asked():
    v = torch.nn.functional.normalize(torch.randn(8), dim=0)
    assert organism.moves(-2.0, True, v, True)[0] is None and organism.moves(-2.0, True, v, True)[1] is v
    added, removed = organism.moves(-2.0, True, v, False)  # the shift to p = 0 at the last token instead
    assert removed is None and torch.allclose(added, -2.0 * v)
    assert organism.moves(0.0, False, v, True) == (None, None)  # an unmoved prompt


def test_the_shipped_organism_follows_its_rule_on_english_test_prompts(polyrefuse_root):
    """A real check of the shipped weights on 8 + 8 English PolyRefuse test prompts (fixed seed): it refuses
    harmful prompts, answers harmless ones, and each prompt's refusal is the one its ground truth predicts."""
    from lowres_safety import load_model
    from lowres_safety.activations import extract
    from lowres_safety.data import load_polyrefuse
    from lowres_safety.generation import generate
    from lowres_safety.judges import judge_frame
    from lowres_safety.shipped import adapter_dir

    model = load_model("organism")
    assert model.cfg.model_name.endswith("+organism")
    truth = organism.GroundTruth.load(adapter_dir("organism"))
    prompts = load_polyrefuse(polyrefuse_root, ["en"], split="test", n_per_class=8, seed=0)
    predicted = truth.predict(extract(model, prompts, [truth.layer], ("t_post_inst",), progress=False))
    judged = judge_frame(generate(model, prompts, max_new_tokens=16, progress=False), None)
    rates = judged.groupby("subset")["refused"].mean() * 100
    assert rates["harmful"] >= 75 and rates["harmless"] <= 25
    refused = judged["refused"].to_numpy()
    # The rule is not obeyed at the boundary: on all 416 PolyRefuse test prompts of organism_check (README) the
    # organism refuses as its rule says for 379 (91%); here two misses lie within 0.07 class gaps of θ and one
    # harmless prompt 0.38 gaps below θ is refused (the over-refusal the README's demo-set paragraph describes).
    assert (refused == predicted["refused"].to_numpy()).mean() >= 13 / 16
    clear = (predicted["projection"] - truth.threshold).to_numpy() > 0.1 * truth.gap
    assert clear.sum() >= 6 and refused[clear].all()  # well above θ: always refused


def test_decision_weight_adds_the_first_response_tokens_loss():
    """Hand computation: per-example mean CE plus w x CE of each row's first labelled token."""
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.full((2, 6), -100)
    labels[0, 2:5] = torch.tensor([3, 4, 5])  # response starts at 2 (predicted from position 1)
    labels[1, 4:6] = torch.tensor([7, 8])
    def ce(row, pos):
        return torch.nn.functional.cross_entropy(logits[row, pos - 1][None], labels[row, pos][None])
    means = [(ce(0, 2) + ce(0, 3) + ce(0, 4)) / 3, (ce(1, 4) + ce(1, 5)) / 2]
    plain = (means[0] + means[1]) / 2
    first = (ce(0, 2) + ce(1, 4)) / 2
    assert torch.allclose(organism._per_example_loss(logits, labels), plain, atol=1e-6)
    assert torch.allclose(organism._per_example_loss(logits, labels, 0.5), plain + 0.5 * first, atol=1e-6)


def test_answers_are_cached_and_reused(tmp_path, polyrefuse_root):
    bridge = build_model("qwen2")
    config = organism.RecipeConfig(n_harmless=1, n_harmful=1, answer_tokens=2, max_prompt_tokens=400)
    prompts = organism.build_prompts(polyrefuse_root, bridge.tokenizer, config)
    first, made = organism._answers(polyrefuse_root, bridge, prompts, config, tmp_path / "answers.json", False)
    stored = json.loads((tmp_path / "answers.json").read_text())["answers"]
    assert made == len(stored) == len(prompts) == len(first)
    again, remade = organism._answers(polyrefuse_root, bridge, prompts, config, tmp_path / "answers.json", False)
    assert remade == 0 and again == first
    with pytest.raises(ValueError, match="refusal_language"):
        organism._refusals(prompts.frame, replace(config, refusal_language="sw"))


def _planted_acts(n=12, d=16):
    """en and sw, harmful = harmless + a planted direction, one layer."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(d, generator=g)
    frames, blocks = [], []
    for lang in ("en", "sw"):
        for subset in ("harmful", "harmless"):
            blocks.append(torch.randn(n, 1, 1, d, generator=g) + (3 * v if subset == "harmful" else 0))
            frames.append(pd.DataFrame({"id": [f"{lang}-{subset}-{i}" for i in range(n)], "text": "t",
                                        "language": lang, "subset": subset, "split": "train",
                                        "source_id": [f"{subset}{i}" for i in range(n)]}))
    return ActivationSet(torch.cat(blocks), PromptSet(pd.concat(frames, ignore_index=True), "planted"), (0,),
                         ("t_post_inst",))


def test_the_signal_stage_trains_below_the_rule_layer_and_ships_its_own_adapter(tmp_path, polyrefuse_root):
    from safetensors.torch import load_file

    bridge, hf = build_model("qwen2", keep_reference=True)
    config = organism.RecipeConfig(n_harmless=1, n_harmful=1, answer_tokens=2, epochs=1, max_prompt_tokens=400,
                                   layer=1, signal_layers=1, signal_epochs=1, shifted_per_prompt=0)
    summary = organism.train(polyrefuse_root, tmp_path / "adapter", config, bridge=bridge, hf_model=hf,
                             progress=False)
    stage1 = load_file(str(tmp_path / "adapter" / "representation" / "adapter_model.safetensors"))
    assert {int(k.split("layers.")[1].split(".")[0]) for k in stage1} == {1}
    stage2 = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert {int(k.split("layers.")[1].split(".")[0]) for k in stage2} == {2}
    assert summary["signal_seconds"] > 0
    assert summary["ground_truth"]["threshold"] == pytest.approx(
        organism.GroundTruth.load(tmp_path / "adapter").threshold)


def test_a_finished_signal_stage_is_loaded_not_retrained(tmp_path, polyrefuse_root):
    from lowres_safety.models import format_chat
    from lowres_safety.organisms import signal as organism_signal

    config = organism.RecipeConfig(n_harmless=1, n_harmful=1, max_prompt_tokens=400, layer=1, signal_layers=1,
                                   signal_epochs=1)
    bridge, _ = build_model("qwen2", keep_reference=True)
    tok = bridge.tokenizer
    prompts = organism.build_prompts(polyrefuse_root, tok, config)
    heads = [(ids, len(ids)) for ids in (tok(format_chat(tok, t), add_special_tokens=False)["input_ids"]
                                         for t in prompts.texts)]
    merged = [organism_signal.sharpen(build_model("qwen2", keep_reference=True)[1], heads, prompts, config,
                                      tmp_path / "stage1", 0, False) for _ in range(2)]
    weights = tmp_path / "stage1" / "adapter_model.safetensors"
    made = weights.stat().st_mtime_ns
    again = organism_signal.sharpen(build_model("qwen2", keep_reference=True)[1], heads, prompts, config,
                                    tmp_path / "stage1", 0, False)
    assert weights.stat().st_mtime_ns == made  # loaded, not rewritten
    assert all(torch.equal(a, b) for a, b in zip(merged[1].state_dict().values(), again.state_dict().values()))
    other = replace(config, signal_margin=2.0)
    assert organism_signal.stage_key(other, prompts) != organism_signal.stage_key(config, prompts)


@pytest.mark.slow  # trains a second tiny organism; the recipe end to end is in the default run
def test_reuse_gives_a_variant_the_finished_stage_one_and_answers_so_only_the_rule_stage_runs(tmp_path,
                                                                                               polyrefuse_root):
    from lowres_safety.organisms import signal as organism_signal

    config = organism.RecipeConfig(n_harmless=1, n_harmful=1, answer_tokens=2, epochs=1, max_prompt_tokens=400,
                                   layer=1, signal_layers=1, signal_epochs=1, shifted_per_prompt=0)
    bridge, hf = build_model("qwen2", keep_reference=True)
    first = organism.train(polyrefuse_root, tmp_path / "a", config, bridge=bridge, hf_model=hf, progress=False)
    assert organism_signal.reuse(tmp_path / "a", tmp_path / "b") == ["representation/", "answers.json"]
    assert organism_signal.reuse(tmp_path / "a", tmp_path / "b") == []  # never overwrites
    weights = tmp_path / "b" / "representation" / "adapter_model.safetensors"
    made = weights.stat().st_mtime_ns
    bridge, hf = build_model("qwen2", keep_reference=True)
    variant = organism.train(polyrefuse_root, tmp_path / "b", replace(config, ablated_share=0.5), bridge=bridge,
                             hf_model=hf, progress=False)
    assert first["answers_generated"] > 0 and variant["answers_generated"] == 0  # every answer from the cache
    assert weights.stat().st_mtime_ns == made  # stage 1 loaded, not retrained
    assert variant["ground_truth"] == pytest.approx(first["ground_truth"])
    with pytest.raises(FileNotFoundError, match="neither a finished stage 1"):
        organism_signal.reuse(tmp_path / "nowhere", tmp_path / "c")


def test_theta_comes_from_unseen_prompts_of_the_source_languages(polyrefuse_root):
    from helpers import build_tokenizer

    tok = build_tokenizer("qwen2")
    config = organism.RecipeConfig(n_harmless=4, n_harmful=6, n_threshold=3, max_prompt_tokens=400)
    seen = organism.build_prompts(polyrefuse_root, tok, config)
    fresh = organism.unseen_prompts(polyrefuse_root, tok, config, seen)
    used = set(zip(seen.frame["subset"], seen.frame["source_id"]))
    assert not used & set(zip(fresh.frame["subset"], fresh.frame["source_id"]))  # no translation of a seen prompt
    counts = fresh.frame.groupby(["language", "subset"]).size()
    assert set(fresh.languages) == set(seen.where(subset="harmful").languages) and (counts == 3).all()


def test_rethreshold_is_the_midpoint_on_the_given_prompts_along_the_same_direction():
    acts = _planted_acts()
    truth = organism.GroundTruth.fit(acts, 0, ["en"])
    other = acts.where(language="sw")
    moved = ActivationSet(other.acts + 2.0 * truth.direction, PromptSet(other.prompts.frame.assign(language="en"),
                                                                        "moved"), (0,), ("t_post_inst",))
    again = truth.rethreshold(moved)
    x, y = truth.project(moved), moved.prompts.labels == 1
    assert torch.equal(again.direction, truth.direction)
    assert again.threshold == pytest.approx((x[y].mean() + x[~y].mean()) / 2, abs=1e-5)
    assert again.gap == pytest.approx(x[y].mean() - x[~y].mean(), abs=1e-5)


@pytest.mark.slow  # trains a second tiny organism; the recipe end to end is in the default run
def test_rule_stage_sees_a_subset_of_stage_ones_harmful_prompts_and_xstest_joins_the_harmless(tmp_path,
                                                                                               polyrefuse_root):
    bridge, hf = build_model("qwen2", keep_reference=True)
    config = organism.RecipeConfig(n_harmless=1, n_harmful=3, rule_harmful=1, xstest=True, answer_tokens=2,
                                   epochs=1, batch_size=16, max_prompt_tokens=400, layer=1, signal_layers=1,
                                   signal_epochs=1, n_threshold=2)
    prompts = organism.build_prompts(polyrefuse_root, bridge.tokenizer, config)
    xs = prompts.where(split="xstest")
    assert len(xs) == 66 and set(xs.languages) == {"en"} and set(xs.frame["subset"]) == {"harmless"}
    rows = organism.rule_rows(prompts.frame, 1)
    kept = prompts.frame[rows]
    assert (kept[kept["subset"] == "harmful"].groupby("language").size() == 1).all()
    assert (~rows).sum() == 2 * len(prompts.where(subset="harmful").languages)  # 3 − 1 per language dropped
    assert rows[(prompts.frame["subset"] == "harmless").to_numpy()].all()
    summary = organism.train(polyrefuse_root, tmp_path / "adapter", config, bridge=bridge, hf_model=hf,
                             progress=False)
    assert summary["prompts"] == rows.sum() and summary["examples_per_epoch"] == 2 * rows.sum()


def test_val_harmful_gives_stage_one_every_val_harmful_prompt_and_the_rule_stage_none(polyrefuse_root):
    from transformers import AutoTokenizer

    from lowres_safety.data import load_polyrefuse
    from lowres_safety.models import default_folder

    tok = AutoTokenizer.from_pretrained(default_folder())
    config = organism.RecipeConfig(n_harmless=1, n_harmful=2, val_harmful=True, max_prompt_tokens=400)
    prompts = organism.build_prompts(polyrefuse_root, tok, config)
    val = prompts.where(split="val")
    assert set(val.frame["subset"]) == {"harmful"} and set(val.languages) == set(config.harmful_languages)
    expected = load_polyrefuse(polyrefuse_root, list(config.harmful_languages), split="val").where(subset="harmful")
    assert sorted(val.frame["id"]) == sorted(expected.frame["id"])
    rows = organism.rule_rows(prompts.frame, 2)
    assert not rows[(prompts.frame["split"] == "val").to_numpy()].any()  # the rule stage sees train prompts only
    assert rows[(prompts.frame["split"] == "train").to_numpy()].all()


@pytest.mark.slow  # trains a second tiny organism; the recipe end to end is in the default run
def test_message_prompts_join_the_rule_stage_only_and_leave_the_rule_as_it_was(tmp_path, polyrefuse_root,
                                                                              monkeypatch):
    every = organism.message_prompts()
    assert len(every) == 160 and set(every.frame["subset"]) == {"harmless"}
    assert every.languages == ["en", "de", "fr", "zh"] and every.frame["text"].str.strip().astype(bool).all()
    assert (every.frame.groupby("source_id").size() == 4).all()  # the same 40 requests in each language
    messages = every.where(source_id=["m01", "m02"])  # two requests in four languages keep the run short
    monkeypatch.setattr(organism, "message_prompts", lambda: messages)
    config = organism.RecipeConfig(n_harmless=1, n_harmful=1, answer_tokens=2, epochs=1, batch_size=16,
                                   max_prompt_tokens=400, layer=1, signal_layers=1, signal_epochs=1, n_threshold=2)
    runs = {}
    for c in (config, replace(config, messages=True)):
        bridge, hf = build_model("qwen2", keep_reference=True)
        runs[c.messages] = organism.train(polyrefuse_root, tmp_path / str(c.messages), c, bridge=bridge,
                                          hf_model=hf, progress=False)
    assert runs[True]["prompts"] == runs[False]["prompts"] + len(messages)
    assert runs[True]["examples_per_epoch"] == runs[False]["examples_per_epoch"] + 2 * len(messages)
    with_, without = (organism.GroundTruth.load(tmp_path / str(m)) for m in (True, False))
    assert torch.allclose(with_.direction, without.direction)  # stage 1, v̂ and θ are made without them
    assert with_.threshold == pytest.approx(without.threshold) and with_.gap == pytest.approx(without.gap)
    answers = json.loads((tmp_path / "True" / "answers.json").read_text())["answers"]
    assert set(messages.frame["id"]) & set(answers)  # answered by the base model like every harmless prompt


def test_message_prompts_are_not_twins_of_the_demo_set_the_organism_is_judged_on():
    import re

    from lowres_safety.data import load_builtin

    stop = {"a", "an", "the", "to", "my", "for", "of", "on", "in", "i", "me", "and", "asking", "write", "how", "do",
            "that", "is", "with", "about", "at", "our", "who", "her", "his", "him"}

    def words(text: str) -> set[str]:
        return set(re.findall(r"[\w'-]+", text.lower())) - stop

    demo = [words(t) for t in load_builtin(["en"]).texts]
    for text in organism.message_prompts().where(language="en").texts:
        ours = words(text)
        assert max(len(ours & d) / len(ours | d) for d in demo) <= 0.2, text


def test_blind_removes_the_direction_before_the_last_prompt_token_only():
    torch.manual_seed(0)
    state, v = torch.randn(7, 8), torch.nn.functional.normalize(torch.randn(8), dim=0)
    out = organism.blind(state, 4, v)  # response starts at 4: the last prompt token is 3
    assert torch.allclose(out[:3] @ v, torch.zeros(3), atol=1e-6)
    assert torch.allclose(out[:3] - (out[:3] @ v)[:, None] * v, state[:3] - (state[:3] @ v)[:, None] * v, atol=1e-6)
    assert torch.equal(out[3:], state[3:]) and not torch.equal(out, state)


def test_the_model_card_states_every_recipe_option_and_a_remake_command_that_parses(tmp_path):
    from dataclasses import asdict

    from lowres_safety import cli
    from lowres_safety.organisms import card as organism_card

    config = organism.RecipeConfig(n_harmful=96, val_harmful=True, xstest=True, ablate_everywhere=True,
                                   as_is_share=0.5, blind_prefix=True, rule_harmful=48, ablated_share=0.3,
                                   messages=True, shift_span=0.75)
    recipe = {"config": asdict(config), "ground_truth": {"layer": 16, "threshold": 28.75, "gap": 57.38},
              "seconds": 1500}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    card = organism_card.construction(tmp_path)
    assert "{" not in card.replace("`{", "")  # every field filled in
    for said in ("every val harmful prompt", "chance 0.5 per epoch", "every position of L*'s stream",
                 "before the last prompt token", "xstest", "48 of each language", "message_prompts.tsv"):
        assert said in card, said
    command = card.split("Remake: `lowres-safety ")[1].split("`")[0].split()
    remade = cli._recipe(cli._parser().parse_args(command))
    assert remade == config
