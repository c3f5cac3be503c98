import json

import pytest

from lowres_safety import data


def test_tiers_are_the_papers_23_languages():
    assert len(data.TIERS) == 23
    assert data.tier("low") == ["sw", "am", "my", "km", "si", "yo"]
    assert data.tier_of("th") == "mid" and data.tier_of("xx") == "unlisted"
    assert data.tier("high", tiers={"en": "high", "sw": "low"}) == ["en"]
    with pytest.raises(ValueError, match="unknown tier"):
        data.tier("medium")


def test_builtin_demo_set_is_balanced_and_parallel():
    ps = data.load_builtin()
    assert len(ps.languages) >= 8 and {"sw", "yo"} <= set(ps.languages)
    assert {data.tier_of(lang) for lang in ps.languages} == {"high", "mid", "low"}
    counts = ps.frame.groupby(["language", "subset"]).size()
    assert counts.min() >= 24 and counts.nunique() == 1
    assert ps.frame.groupby("source_id")["language"].nunique().eq(len(ps.languages)).all()


def test_polyrefuse_train_reads_english_from_dataset_splits(polyrefuse_root):
    ps = data.load_polyrefuse(polyrefuse_root, ["en", "de"], split="train")
    english = json.loads((polyrefuse_root / "dataset/splits/harmful_train.json").read_text())
    en = ps.where(language="en", subset="harmful")
    assert len(en) == len(english) and en.texts[3] == english[3]["instruction"]
    de = ps.where(language="de", subset="harmful")
    assert de.frame["source_id"].tolist() == en.frame["source_id"].tolist()


def test_polyrefuse_test_split_uses_the_translation(polyrefuse_root):
    raw = json.loads((polyrefuse_root / "PolyRefuse/harmful_test_translated_th.json").read_text())
    th = data.load_polyrefuse(polyrefuse_root, "th", split="test").where(subset="harmful")
    assert th.texts[0] == raw[0]["instruction_translated"] != raw[0]["instruction"]


def test_sampling_is_seeded_balanced_and_parallel(polyrefuse_root):
    a = data.load_polyrefuse(polyrefuse_root, ["en", "th", "yo"], n_per_class=16, seed=3)
    b = data.load_polyrefuse(polyrefuse_root, ["en", "th", "yo"], n_per_class=16, seed=3)
    c = data.load_polyrefuse(polyrefuse_root, ["en", "th", "yo"], n_per_class=16, seed=4)
    assert a.frame.equals(b.frame) and not a.frame.equals(c.frame)
    assert a.frame.groupby(["language", "subset"]).size().eq(16).all()
    ids = {lang: set(a.where(language=lang).frame["source_id"]) for lang in a.languages}
    assert ids["en"] == ids["th"] == ids["yo"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"languages": ["en", "sw"]}, r"\['sw'\] not in split 'train'.*available"),
        ({"languages": ["en"], "split": "dev"}, "unknown split"),
        ({"languages": ["en"], "n_per_class": 250}, "only 200 harmless"),
    ],
)
def test_bad_polyrefuse_requests_say_what_exists(polyrefuse_root, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load_polyrefuse(polyrefuse_root, **kwargs)


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="upstream Multilingual-Refusal layout"):
        data.load_polyrefuse(tmp_path / "nowhere")


def test_require_names_the_missing_selection():
    ps = data.load_builtin(["en", "sw"])
    with pytest.raises(ValueError, match="language='yo'.*languages: \\['en', 'sw'\\]"):
        ps.require(language="yo")
    assert len(ps.require(language="sw", subset="harmful")) == 24
