import json
import warnings

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


def test_chinese_harmless_train_and_val_are_unpaired_and_nothing_else(polyrefuse_root):
    """This copy's zh harmless train/val files are not in the English row order (README, Data)."""
    for split in ("train", "val"):
        with pytest.warns(UserWarning, match=f"zh harmless {split} is not in en's row order") as caught:
            ps = data.load_polyrefuse(polyrefuse_root, split=split)
        assert len(caught) == 1 and "zh harmful" not in str(caught[0].message)
        frame = ps.frame
        shared = frame.groupby("source_id")["language"].nunique()
        zh_harmless = frame[(frame["language"] == "zh") & (frame["subset"] == "harmless")]
        assert shared[zh_harmless["source_id"]].eq(1).all()  # no zh harmless prompt is paired with anything
        assert set(zh_harmless["origin"]) == {f"PolyRefuse {split} (unpaired)"}
        others = frame[~frame.index.isin(zh_harmless.index)]
        expected = len(ps.languages) - (others["subset"] == "harmless").to_numpy()  # every language but zh
        assert (shared[others["source_id"]].to_numpy() == expected).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the test split (no zh harmless file) is parallel throughout
        data.load_polyrefuse(polyrefuse_root, split="test")


def test_sampling_keeps_unpaired_chinese_harmless_balanced(polyrefuse_root):
    with pytest.warns(UserWarning):
        ps = data.load_polyrefuse(polyrefuse_root, ["en", "de", "zh"], split="train", n_per_class=8, seed=1)
    assert ps.frame.groupby(["language", "subset"]).size().eq(8).all()
    ids = {lang: set(ps.where(language=lang, subset="harmless").frame["source_id"]) for lang in ps.languages}
    assert ids["en"] == ids["de"] and not ids["zh"] & ids["en"]
    harmful = {lang: set(ps.where(language=lang, subset="harmful").frame["source_id"]) for lang in ps.languages}
    assert harmful["en"] == harmful["de"] == harmful["zh"]


def test_extra_tiers_last_for_the_block_only():
    with data.extra_tiers({"vi": "mid", "bn": "low", "en": "high"}):
        assert data.tier_of("vi") == "mid" and data.tier("low")[-1] == "bn"
    assert data.tier_of("vi") == "unlisted" and len(data.TIERS) == 23
    with pytest.raises(ValueError, match="'en' is 'high' in the paper's table"):
        with data.extra_tiers({"en": "low"}):
            pass
    with pytest.raises(ValueError, match="tier 'medium' for 'vi' is not one of"):
        with data.extra_tiers({"vi": "medium"}):
            pass
    assert len(data.TIERS) == 23


def test_extra_tiers_change_nothing_module_wide():
    """The paper's table is read-only, and a block's extra tiers are its own: another thread never sees them."""
    import threading

    with pytest.raises(TypeError):
        data.TIERS["vi"] = "mid"
    seen = {}
    with data.extra_tiers({"vi": "mid"}):
        other = threading.Thread(target=lambda: seen.update(other=data.tier_of("vi")))
        other.start()
        other.join()
        seen["here"] = data.tier_of("vi")
    assert seen == {"here": "mid", "other": "unlisted"}
