"""The paper's 23 languages: a PolyRefuse folder holding the released code's nine added translations loads them.

The released code (rashadaziz/low-resource-safety) translates PolyRefuse into el he hi fa sw
am my km si and writes them in the upstream layout (``PolyRefuse/{subset}_{split}_translated_{lang}.json``).
This project's copy has 13 of the 23; a copied folder with the nine added (their contents
Yoruba's, renamed: only the layout is under test) must load with each language's tier.
"""

import shutil

import pytest

from lowres_safety.data import load_polyrefuse, tier_of

ADDED = {"el": "mid", "he": "mid", "hi": "mid", "fa": "mid", "sw": "low", "am": "low", "my": "low", "km": "low",
         "si": "low"}
PAPER = {**dict.fromkeys("en de fr es it nl pl ru zh ja".split(), "high"),
         **dict.fromkeys("ar ko th el he hi fa".split(), "mid"), **dict.fromkeys("sw am my km si yo".split(), "low")}


def test_the_tiers_are_the_papers_table():
    assert len(PAPER) == 23 and all(tier_of(lang) == tier for lang, tier in PAPER.items())


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_folder_with_the_nine_added_translations_loads_them_with_their_tiers(polyrefuse_root, tmp_path, split):
    """Catches: a loader that knows only the languages of this project's copy, or reads a tier from the folder."""
    folder = tmp_path / "Multilingual-Refusal"
    shutil.copytree(polyrefuse_root / "dataset", folder / "dataset")
    (folder / "PolyRefuse").mkdir()
    for source in (polyrefuse_root / "PolyRefuse").glob("*_translated_*.json"):
        if source.stem.endswith(("_yo", "_ar")):
            shutil.copy(source, folder / "PolyRefuse" / source.name)
    for lang in ADDED:
        for source in (polyrefuse_root / "PolyRefuse").glob(f"*_{split}_translated_yo.json"):
            shutil.copy(source, folder / "PolyRefuse" / source.name.replace("_yo.json", f"_{lang}.json"))
    prompts = load_polyrefuse(folder, [*ADDED, "yo"], split=split, n_per_class=3, seed=0)
    assert prompts.languages == [*ADDED, "yo"]
    for lang, tier in ADDED.items():
        sub = prompts.where(language=lang)
        assert sorted(set(sub.frame["subset"])) == ["harmful", "harmless"] and tier_of(lang) == tier
        assert list(sub.texts) == list(prompts.where(language="yo").texts)  # the copied rows, paired by source id
