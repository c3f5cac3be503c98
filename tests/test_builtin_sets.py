"""The project's own prompt sets: the twins (phrase-matched) and the natural set (classes written apart)."""

import re

import pytest

from lowres_safety.data import BUILTIN_SETS, PAPER_TIERS, is_builtin, load_builtin, open_prompts
from lowres_safety.pipelines import SteerConfig, steer_prompts

NATURAL = ["en", "de", "fr", "zh", "ar", "hi", "ko", "th", "sw", "yo"]
STOP = set("a an the of to in on for and or my me i how what is are can do with by from at it be that this your "
           "you without into about which some use using".split())


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower())) - STOP


def jaccard(a: str, b: str) -> float:
    x, y = words(a), words(b)
    return len(x & y) / max(len(x | y), 1)


def test_the_natural_set_has_40_and_40_in_10_languages_of_every_tier_with_train_and_test_halves():
    """Catches: a language or a class short of prompts, a split unbalanced, or a tier missing (the issue's floor:
    40 + 40 in at least 10 of the paper's languages, ar ko th yo among them)."""
    every = load_builtin(name="natural")
    sizes = every.frame.groupby(["language", "subset"]).size()
    assert sorted(every.languages) == sorted(NATURAL) and (sizes == 40).all()
    assert {PAPER_TIERS[lang] for lang in NATURAL} == {"high", "mid", "low"}
    for split in ("train", "test"):
        half = load_builtin(name="natural", split=split)
        assert set(half.frame["split"]) == {split}
        assert (half.frame.groupby(["language", "subset"]).size() == 20).all()
    train, test = (set(load_builtin(name="natural", split=s).frame["source_id"]) for s in ("train", "test"))
    assert not train & test
    assert not (every.frame["text"].str.strip() == "").any()


def test_the_natural_classes_are_written_apart_and_the_twins_are_not():
    """Catches: a natural harmful prompt that is the twin of a harmless one (the set is meant to be the natural
    distribution, not a phrase-matched one). Reference: content-word Jaccard on the English prompts; the twins'
    own pairs show what a twin scores."""
    natural = load_builtin(["en"], name="natural").frame
    harmful = natural[natural["subset"] == "harmful"]["text"]
    harmless = natural[natural["subset"] == "harmless"]["text"]
    closest = max(jaccard(a, b) for a in harmful for b in harmless)
    twins = load_builtin(["en"], name="twins").frame.set_index("source_id")["text"]
    pairs = [jaccard(twins[f"h{i:02d}"], twins[f"s{i:02d}"]) for i in range(1, 25)]
    assert closest < 0.34
    assert sorted(pairs)[len(pairs) // 2] > closest  # the median twin pair shares more than any natural pair


def test_the_natural_classes_do_not_differ_in_length_the_way_polyrefuse_does():
    """The natural set's design: no class is much longer, ends in '?' more or opens with 'Write' more (in English;
    on PolyRefuse token count alone separates the classes at AUROC 0.82-0.91)."""
    natural = load_builtin(["en"], name="natural").frame
    by = {s: part["text"] for s, part in natural.groupby("subset")}
    mean_words = {s: t.str.split().str.len().mean() for s, t in by.items()}
    assert abs(mean_words["harmful"] / mean_words["harmless"] - 1) < 0.15
    for pattern in (r"\?$", r"^Write"):
        shares = [t.str.contains(pattern).mean() for t in by.values()]
        assert abs(shares[0] - shares[1]) < 0.1


def test_the_twins_are_12_languages_and_builtin_is_their_first_name():
    twins = load_builtin(name="twins")
    assert {"th", "ko", "ar", "yo", "es", "ja"} <= set(twins.languages) and len(twins.languages) == 12
    assert (twins.frame.groupby(["language", "subset"]).size() == 24).all()
    assert load_builtin().frame.equals(twins.frame)
    assert set(BUILTIN_SETS) == {"builtin", "twins", "natural"} and is_builtin("natural") and not is_builtin("x")
    assert open_prompts("twins", ["th"]).frame.equals(load_builtin(["th"], name="twins").frame)
    with pytest.raises(ValueError, match="no built-in set"):
        load_builtin(name="nope")


def test_steer_on_the_natural_set_fits_on_train_and_scores_test():
    """Catches: the natural set halved at random like the twins (its own halves are the split column)."""
    SteerConfig(data="natural")  # a name the config accepts
    fit, evaluation = steer_prompts.fit_and_evaluation("natural", ["ar", "yo"], ["en", "de"], 8, None, "test", 0)
    assert set(fit.frame["split"]) == {"train"} and set(evaluation.frame["split"]) == {"test"}
    assert set(fit.languages) == {"en", "de", "ar", "yo"}
    assert (evaluation.frame.groupby(["language", "subset"]).size() == 8).all()
    assert not set(fit.frame["source_id"]) & set(evaluation.frame["source_id"])
