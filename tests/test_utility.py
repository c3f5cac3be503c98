"""Multiple-choice utility: the released prompt and answer tokens, hand-scored items, Global-MMLU files, steer's column."""

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model, build_tokenizer

from lowres_safety.activations import extract
from lowres_safety.data import load_builtin
from lowres_safety.evaluation import load_mc_demo as reexported
from lowres_safety.pipelines import steering
from lowres_safety.utility import (
    LETTERS,
    answer_token_ids,
    choice_scores,
    load_mc,
    load_mc_demo,
    mc_accuracy,
    mc_prompt,
    mc_scores,
)


@pytest.fixture(scope="module")
def tiny():
    return build_model("qwen2")


def items(answers, language="en"):
    """Hand-made items with the given answer letters."""
    return pd.DataFrame({"question": [f"Question {i}?" for i in range(len(answers))], "option_a": "w",
                         "option_b": "x", "option_c": "y", "option_d": "z", "answer": list(answers),
                         "language": language})


def plant(tokenizer, bonus: dict[str, float]):
    """A hook on the logits adding ``bonus[spelling]`` to that spelling's token at every position."""
    add = {tokenizer.encode(text, add_special_tokens=False)[0]: b for text, b in bonus.items()}

    def fn(logits, hook):
        out = logits.clone()
        for token, b in add.items():
            out[..., token] += b
        return out

    return [("unembed.hook_out", fn)]


def test_prompt_is_the_released_format_in_the_items_own_language():
    row = {"question": "Mji mkuu wa Ufaransa ni upi?", "option_a": "Berlin", "option_b": "Madrid",
           "option_c": "Paris", "option_d": "Roma", "language": "sw"}
    assert mc_prompt(row) == "Mji mkuu wa Ufaransa ni upi?\n\nA. Berlin\nB. Madrid\nC. Paris\nD. Roma\n\nAnswer:"
    assert mc_prompt(row, cue={"sw": "Jibu:"}).endswith("D. Roma\n\nJibu:")
    assert mc_prompt({**row, "language": "de"}, cue={"sw": "Jibu:"}).endswith("\n\nAnswer:")


def test_answer_tokens_are_the_single_token_spellings():
    tok = build_tokenizer()
    ids = answer_token_ids(tok)  # SmolLM2 writes "A" and " A" as one token each, "A." as two
    assert {letter: [tok.decode([i]) for i in ids[letter]] for letter in LETTERS} == {
        letter: [letter, " " + letter] for letter in LETTERS}
    tok.add_tokens(["A.", "B.", "C.", "D."])  # a tokenizer that has "A." as one token scores it too
    assert [tok.decode([i]) for i in answer_token_ids(tok)["C"]] == ["C", " C", "C."]


def test_letter_score_is_the_max_over_spellings_not_their_sum():
    logits = torch.full((2, 8), -50.0)
    ids = {"A": (0, 1), "B": (2, 3), "C": (4,), "D": (5, 6)}
    logits[0, [1, 2, 3]] = torch.tensor([30.0, 29.5, 29.5])  # logsumexp would pick B (30.19), max picks A
    logits[1, [6, 7]] = torch.tensor([3.0, 99.0])  # token 7 is no spelling of any letter
    scores = choice_scores(logits, ids)
    torch.testing.assert_close(scores[0], torch.tensor([30.0, 29.5, -50.0, -50.0]))
    torch.testing.assert_close(scores[1], torch.tensor([-50.0, -50.0, -50.0, 3.0]))


def test_accuracy_of_hand_scored_items(tiny):
    tok = tiny.tokenizer
    answers = "ACCD"
    assert mc_accuracy(tiny, items(answers), plant(tok, {" C": 1000})) == 50.0  # every item answered C
    assert mc_accuracy(tiny, items(answers), plant(tok, {"D": 1000})) == 25.0  # the bare letter counts too
    # " A" 1000 against "B" and " B" 999.6 each: the maximum picks A (1 of 4 right); a sum would pick B
    assert mc_accuracy(tiny, items("ABBC"), plant(tok, {" A": 1000, "B": 999.6, " B": 999.6})) == 25.0
    # a token that spells no letter is ignored, however likely
    assert mc_accuracy(tiny, items(answers), plant(tok, {" C": 1000, "(": 5000})) == 50.0
    scored = mc_scores(tiny, items(answers), plant(tok, {" C": 1000}))
    assert list(scored["prediction"]) == list("CCCC") and list(scored["correct"]) == [False, True, True, False]


def test_scores_match_the_released_recipe_run_on_the_hf_model():
    """Reference: the untouched HF model on the chat-templated prompt, max logit over the one-token spellings."""
    bridge, hf = build_model("qwen2", keep_reference=True)
    tok = bridge.tokenizer
    chosen = load_mc_demo().groupby("language").head(1)  # one item in each of the 8 languages
    ours = mc_scores(bridge, chosen)
    for i, row in enumerate(chosen.to_dict("records")):
        user = (f"{row['question']}\n\nA. {row['option_a']}\nB. {row['option_b']}\nC. {row['option_c']}\n"
                f"D. {row['option_d']}\n\nAnswer:")
        text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        with torch.no_grad():
            logits = hf(tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]).logits[0, -1].float()
        ref = []
        for letter in LETTERS:
            spellings = [tok.encode(s, add_special_tokens=False) for s in (letter, " " + letter, letter + ".",
                                                                          " " + letter + ".")]
            ref.append(max(float(logits[s[0]]) for s in spellings if len(s) == 1))
        got = [ours[f"score_{letter}"].iloc[i] for letter in LETTERS]
        # log-probabilities and logits differ by one constant per item
        assert [g - got[0] for g in got] == pytest.approx([r - ref[0] for r in ref], abs=1e-4)
        assert ours["prediction"].iloc[i] == LETTERS[max(range(4), key=ref.__getitem__)]


def test_builtin_set_is_parallel_balanced_and_in_every_builtin_language():
    mc = load_mc_demo()
    assert reexported().equals(mc)  # evaluation.load_mc_demo still works
    # the 8 languages the twins first had (th, ko, es, ja came later: their mc_accuracy is empty)
    assert sorted(mc["language"].unique()) == sorted(["en", "de", "fr", "zh", "ar", "hi", "sw", "yo"])
    assert set(mc["language"]) <= set(load_builtin().languages)
    assert mc.groupby("language").size().eq(24).all()
    per_item = mc.groupby("sample_id")
    assert per_item["answer"].nunique().eq(1).all()  # the same answer letter in every translation
    assert mc[mc.language == "en"]["answer"].value_counts().to_dict() == {letter: 6 for letter in LETTERS}
    correct = mc.apply(lambda r: r["option_" + r["answer"].lower()], axis=1)
    numbers = correct.map(lambda text: re.findall(r"\d+", text))
    for _, group in numbers.groupby(mc["sample_id"]):  # a numeric answer is the same number in every language
        assert len({tuple(n) for n in group}) == 1
    assert load_mc_demo(["sw", "yo"])["language"].unique().tolist() == ["sw", "yo"]
    with pytest.raises(ValueError, match="has no \\['ko'\\]"):
        load_mc_demo("ko")


def test_load_mc_reads_a_global_mmlu_download(tmp_path):
    pytest.importorskip("pyarrow")
    root = tmp_path / "Global-MMLU"
    (root / "ar").mkdir(parents=True)
    (root / "sw").mkdir()
    extra = {"sample_id": ["x/0", "x/1"], "subject": ["anatomy", "virology"], "subject_category": "STEM",
             "required_knowledge": "none"}
    items(["B", " c"]).drop(columns="language").assign(**extra).to_parquet(root / "ar" / "test-00000-of-00001.parquet")
    items(["A"]).drop(columns="language").to_parquet(root / "ar" / "dev-00000-of-00001.parquet")
    items(["D", "D", "a"]).drop(columns="language").to_json(root / "sw" / "test.jsonl", orient="records", lines=True)
    got = load_mc(root)
    assert got.groupby("language").size().to_dict() == {"ar": 2, "sw": 3}  # dev is another split
    assert list(got["answer"]) == ["B", "C", "D", "D", "A"] and list(got["subject"][:2]) == ["anatomy", "virology"]
    assert list(got["subject_category"][:3]) == ["STEM", "STEM", ""]  # Global-MMLU's own column, kept where present
    assert list(got.columns) == ["sample_id", "language", "subject", "subject_category", "question", "option_a",
                                 "option_b", "option_c", "option_d", "answer"]
    assert len(load_mc(root, split=None)) == 6


def test_load_mc_errors_say_what_to_do(tmp_path):
    plain = tmp_path / "items.csv"
    items("AB").drop(columns="language").to_csv(plain, index=False)
    with pytest.raises(ValueError, match="no 'language' column.*pass language="):
        load_mc(plain)
    assert set(load_mc(plain, language="hi")["language"]) == {"hi"}
    named = tmp_path / "yo.csv"
    items("AB").drop(columns="language").to_csv(named, index=False)
    assert set(load_mc(named)["language"]) == {"yo"}
    deep = tmp_path / "snapshot" / "Global-MMLU" / "hi"  # the nearest folder named like a language
    deep.mkdir(parents=True)
    items("AB").drop(columns="language").to_csv(deep / "test-00000-of-00001.csv", index=False)
    assert set(load_mc(tmp_path / "snapshot")["language"]) == {"hi"}
    assert set(load_mc(deep)["language"]) == {"hi"}  # pointed at one language's folder
    items("AE").to_csv(plain, index=False)
    with pytest.raises(ValueError, match="letter A-D.*item 1 .*'E'"):
        load_mc(plain)
    items("AB").drop(columns="option_d").to_csv(plain, index=False)
    with pytest.raises(ValueError, match="lack columns \\['option_d'\\]"):
        load_mc(plain)
    with pytest.raises(FileNotFoundError, match="no multiple-choice file"):
        load_mc(tmp_path / "missing.tsv")


def test_steer_rows_carry_mc_accuracy_per_language_and_method(tiny, tmp_path):
    from dataclasses import dataclass

    from lowres_safety.methods import NoIntervention

    @dataclass(frozen=True)
    class AnswersC(NoIntervention):
        """A 'method' whose only effect is to make every answer C."""

        name = "answers_c"

        @classmethod
        def fit(cls, ctx):
            return cls()

        def hooks(self, target, k):
            return plant(tiny.tokenizer, {" C": 1000})

    prompts = load_builtin(["en", "de", "sw"], n_per_class=2)
    acts = extract(tiny, prompts, "all", ("t_post_inst",), cache=False, progress=False)
    fitted = steering.fit_methods(tiny, acts, ["en", "de"], layer=1, methods=(NoIntervention, AnswersC))
    mc = pd.concat([items("CCAB", "de").assign(subject_category=["STEM", "STEM", "Humanities", "Humanities"]),
                    items("CDDD", "en")])  # sw has no items
    held = prompts.where(language=["de", "sw"])
    table, _ = steering.evaluate(tiny, fitted, held, acts.where(language=["de", "sw"]),
                                 acts.where(language=["de", "sw"]), ks=(0,), max_new_tokens=1, mc=mc)
    got = table.set_index(["language", "method"])["mc_accuracy"]
    assert got[("de", "answers_c")] == 50.0
    by = table.set_index(["language", "method"])  # items C, C right and A, B wrong under "answer C"
    assert by.loc[("de", "answers_c"), "mc_accuracy[STEM]"] == 100.0
    assert by.loc[("de", "answers_c"), "mc_accuracy[Humanities]"] == 0.0
    assert math.isnan(by.loc[("sw", "answers_c"), "mc_accuracy[STEM]"])
    assert got[("de", "none")] == mc_accuracy(tiny, items("CCAB", "de"))
    assert math.isnan(got[("sw", "none")]) and math.isnan(got[("sw", "answers_c")])
    assert list(table.columns[:9]) == ["language", "tier", "method", "k", "harmful_refusal", "harmless_refusal",
                                       "selectivity", "kl", "mc_accuracy"]
    plain, _ = steering.evaluate(tiny, fitted, held, acts.where(language=["de", "sw"]),
                                 acts.where(language=["de", "sw"]), ks=(0,), max_new_tokens=1)
    assert "mc_accuracy" not in plain  # no items, no column


def test_margin_entropy_and_the_category_summary_by_hand():
    """Catches: a margin against the best letter rather than the best wrong one, entropy over another distribution
    or in bits, a category summary that mixes categories or counts the fire rate as a share of the wrong items.
    Reference: the numbers written out (the released score_margin, score_entropy and subject_category_summaries)."""
    from lowres_safety.utility import margin_and_entropy, mc_summary

    scores = np.array([[3.0, 1.0, 0.0, 0.0], [0.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    margin, entropy = margin_and_entropy(scores, np.array([0, 1, 3]))
    assert margin.tolist() == [2.0, 0.0, 0.0]
    z = math.exp(3) + math.exp(1) + 2
    by_hand = -sum(p * math.log(p) for p in (math.exp(3) / z, math.exp(1) / z, 1 / z, 1 / z))
    assert entropy[0] == pytest.approx(by_hand) and entropy[2] == pytest.approx(math.log(4))
    frame = pd.DataFrame({"subject_category": ["STEM", "Humanities", "STEM"], "correct": [True, False, True],
                          "margin": margin, "entropy": entropy})
    summary = mc_summary(frame, fired=np.array([True, False, False])).set_index("subject_category")
    assert list(summary.index) == ["ALL", "Humanities", "STEM"]
    assert summary.loc["ALL", "accuracy"] == pytest.approx(200 / 3) and summary.loc["STEM", "n"] == 2
    assert summary.loc["STEM", "gate_fire_rate"] == 50.0 and summary.loc["Humanities", "mean_margin"] == 0.0
    assert np.isnan(mc_summary(frame).loc[0, "gate_fire_rate"])
