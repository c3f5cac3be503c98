"""The paper's analyses inside the reports (pipelines/analyses_report.py): the prompts they read, the tables they
hold against the library calls on the same activations, and their sections."""

import pandas as pd
import pytest
from helpers import check_report_renders, save_chat_model

import lowres_safety as ls
from lowres_safety import analyses
from lowres_safety.pipelines import analyses_report
from lowres_safety.pipelines.report import write_html


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random chat model (mechanics, not numbers), 8 layers so the ablation sweep has two of them."""
    return ls.load_model(str(save_chat_model(tmp_path_factory.mktemp("tiny-chat"), num_hidden_layers=8)))


def test_the_natural_set_gives_every_fourth_train_prompt_to_val():
    """Catches: val taken from test, not every fourth train prompt per language and class, a split sampled past what
    it has, prompts in two splits. Reference: the natural set's halves, counted by hand (20 + 20 per half)."""
    p = ls.data.analysis_splits("natural", ["en", "sw"], n_per_class=8)
    counts = p.frame.groupby(["language", "subset", "split"]).size()
    assert counts.xs("train", level="split").eq(8).all() and counts.xs("val", level="split").eq(5).all()
    assert counts.xs("test", level="split").eq(8).all()
    train = ls.data.load_builtin(["en", "sw"], name="natural", split="train").frame
    every_fourth = set(train.groupby(["language", "subset"]).nth(slice(None, None, 4))["id"])
    assert set(p.frame.loc[p.frame["split"] == "val", "id"]) == every_fourth
    assert set(p.frame.loc[p.frame["split"] == "train", "id"]) <= set(train["id"]) - every_fourth
    test = set(ls.data.load_builtin(["en", "sw"], name="natural", split="test").frame["id"])
    assert set(p.frame.loc[p.frame["split"] == "test", "id"]) <= test
    assert p.frame["id"].is_unique
    with pytest.raises(ValueError, match="need train and test prompts"):
        ls.data.analysis_splits("twins")


def test_polyrefuse_keeps_its_splits_and_drops_a_split_a_language_lacks_a_class_of(polyrefuse_root):
    """Catches: a language kept in a split where one class has no file (PolyRefuse's zh test has no harmless one),
    a split asked for more prompts than it has (val: 39 harmful a language). Reference: the folder's files."""
    files = {path.name for path in (polyrefuse_root / "PolyRefuse").glob("*.json")}
    p = ls.data.analysis_splits(polyrefuse_root, ["en", "zh", "yo"], n_per_class=50)
    for split in ("val", "test"):
        has = {lang for lang in ("zh", "yo") if {f"harmful_{split}_translated_{lang}.json",
                                                 f"harmless_{split}_translated_{lang}.json"} <= files}
        assert set(p.where(split=split).languages) - {"en"} == has
    counts = p.frame.groupby(["split", "subset"])["language"].value_counts()
    assert counts["val", "harmful"].eq(39).all() and counts.drop(("val", "harmful")).eq(50).all()  # val has 39


def test_the_report_tables_are_the_library_calls_on_the_same_activations(tiny, tmp_path):
    """Catches: the analyses run on other prompts, another layer, other sources or seeds than the ones the report
    names; a table without its section or file. Reference: each analysis called directly on the same prompts."""
    languages = ["en", "de", "sw", "yo"]
    twins = ls.data.load_builtin(name="twins")
    found = analyses_report.representation(tiny, "natural", languages, 3, n_per_class=8, seeds=(0, 1),
                                           budgets=(1, 2), twins=twins, full=True, progress=False)
    acts = ls.extract(tiny, ls.data.analysis_splits("natural", languages, n_per_class=8), [3], ("t_post_inst",),
                      cache=True)  # the activations the report read, not a rerun batched otherwise
    name = ls.models.model_id(tiny)
    expected = {
        "recoverability": analyses.recoverability(acts, 3, source_languages=["en", "de"], budgets=(1, 2),
                                                  seeds=(0, 1), model=name, progress=False),
        "rank_sweep": analyses.rank_sweep(acts, 3, source_languages=["en", "de"], budgets=(0, 1, 2), seeds=(0, 1),
                                          model=name, progress=False),
        "subspace_transfer": analyses.subspace_transfer(acts, 3, rank=2, model=name, progress=False),
        "ood": analyses.ood_transfer(acts.where(split="train", language=["en", "de"]),
                                     ls.extract(tiny, twins.where(language=languages), [3], ("t_post_inst",)), 3,
                                     rank=2, seeds=(0, 1), model=name, progress=False),
    }
    assert list(found.tables) == [*expected, "readouts"]
    for key, table in expected.items():
        pd.testing.assert_frame_equal(found.tables[key], table, obj=key)
    assert set(found.tables["readouts"]["language"]) >= {"sw", "yo", "__macro__"}
    assert "sources en, de (train), layer 3, seeds 2" in found.about
    sections = analyses_report.sections(found, number=8)
    assert [s.title.split(" ")[0] for s in sections] == ["8.1", "8.2", "8.3", "8.4", "8.5"]
    assert all(s.figures and s.table is not None and len(s.table) for s in sections)
    check_report_renders(write_html(tmp_path / "paper.html", "paper", sections))
    saved = found.save(tmp_path)
    assert sorted(p.name for p in saved.iterdir()) == sorted(f"{k}.csv" for k in found.tables)


def test_the_sweeps_are_the_released_sweeps_with_the_source_pc1(tiny, tmp_path, monkeypatch):
    """Catches: another direction, λ grid, layer stride or ablation sources than the section says; a rerun that
    generates again what a stopped one finished. Reference: the sweeps called directly with the pc1 of the source
    directions."""
    prompts = ls.data.load_builtin(["en", "sw"], name="twins", n_per_class=2)
    fit = ls.extract(tiny, ls.data.load_builtin(["en", "de"], name="natural", split="train", n_per_class=4), "all",
                     ("t_post_inst",))
    found = analyses_report.steering_sweeps(tiny, prompts, fit, ["en", "de"], 5, max_new_tokens=2, store=tmp_path,
                                            progress=False)
    v = ls.directions.pc1_of_directions(fit, ["en", "de"], 5)
    strength = analyses.strength_sweep(tiny, prompts, v, 5, strengths=(0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
                                       max_new_tokens=2, progress=False)
    ablation = analyses.ablation_sweep(tiny, prompts, fit, layers=(0, 4), sources=("en", "hrl_pooled"),
                                       max_new_tokens=2, progress=False)
    pd.testing.assert_frame_equal(found.tables["strength"], strength)
    pd.testing.assert_frame_equal(found.tables["ablation"], ablation)
    (tmp_path / "ablation" / "block-en-4.json").unlink()  # as if stopped before its last run

    def generate_once(*args, **kwargs):  # only the missing run may generate
        monkeypatch.setattr(analyses.sweeps, "generate", forbidden)
        return real(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("generated again")

    real = analyses.sweeps.generate
    monkeypatch.setattr(analyses.sweeps, "generate", generate_once)
    again = analyses_report.steering_sweeps(tiny, prompts, fit, ["en", "de"], 5, max_new_tokens=2, store=tmp_path,
                                            progress=False)
    for name in ("strength", "ablation"):
        pd.testing.assert_frame_equal(again.tables[name], found.tables[name])
    assert [s.title for s in analyses_report.sections(found)] == [
        "Refusal as the steering strength grows (released strength sweep)",
        "Where does ablation remove refusal? (released directional ablation, per layer)"]
