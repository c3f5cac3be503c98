"""Every bad option of every subcommand is a one-line error (exit 2) before any data or model loads."""

import re

import pandas as pd
import pytest

from lowres_safety.cli import _parser, main
from lowres_safety.cli import checks as cli_checks
from lowres_safety.data.prompt_files import FileOptions

POLY = "<polyrefuse>"  # replaced by the real folder
CASES = [
    # diagnose: numbers
    (["diagnose", "--analysis-per-class", "-3"], "--analysis-per-class -3: must be at least 2"),
    (["diagnose", "--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1"),
    (["diagnose", "--n-per-class", "1"], "--n-per-class 1: must be at least 2"),
    (["diagnose", "--seed", "-1"], "--seed -1: must be at least 0"),
    # diagnose: lists and choices
    (["diagnose", "--languages", "en,,de"], "--languages 'en,,de' has an empty item"),
    (["diagnose", "--languages", ""], "--languages '' has an empty item"),
    (["diagnose", "--languages", "en,sw,en"], r"--languages names \['en'\] more than once"),
    (["diagnose", "--data", POLY, "--split", "dev"], "split 'dev': on PolyRefuse this takes train or val or test"),
    (["diagnose", "--tiers", "vi=medium"], "--tiers item 'vi=medium' is not language=tier"),
    (["diagnose", "--tiers", "vi"], "--tiers item 'vi' is not language=tier"),
    (["diagnose", "--tiers", "vi=mid,vi=low"], "--tiers names 'vi' twice"),
    (["diagnose", "--tiers", "sw=high"], "'sw' is 'low' in the paper's table"),
    # diagnose: data and the file options
    (["diagnose", "--data", "nowhere/prompts.csv"], "data nowhere/prompts.csv: no such file or folder"),
    (["diagnose", "--data", "{tmp}"], "is a folder without PolyRefuse/ in it"),
    (["diagnose", "--data", "{tmp}/p.xlsx"], "prompt files must end in one of"),
    (["diagnose", "--text-column", "prompt"], "--text-column read a prompt file, but --data is 'natural'"),
    (["diagnose", "--data", POLY, "--harmless-from", POLY], "--harmless-from read a prompt file"),
    (["diagnose", "--data", "{tmp}/p.csv"], "name the text column"),
    (["diagnose", "--data", "{tmp}/p.csv", "--text-column", "prompt"], "a text column needs a language column"),
    (["diagnose", "--data", "{tmp}/p.csv", "--languages", "en", "--harmless-from", "{tmp}/none.csv"],
     "harmless_from .*none.csv: no such file or folder"),
    (["diagnose", "--data", "{tmp}/p.csv", "--languages", "en", "--harmless-from", "{tmp}"],
     "harmless_from .* is a folder without PolyRefuse/"),
    (["diagnose", "--data", "{tmp}/p.csv", "--languages", "en", "--harmful-values", "bad,x",
      "--harmless-values", "x"], r"\['x'\] are both harmful and harmless values"),
    (["diagnose", "--data", "{tmp}/p.csv", "--languages", "en", "--harmful-values", "bad,"],
     "--harmful-values 'bad,' has an empty item"),
    (["diagnose", "--out", "{tmp}/p.csv"], "--out .*p.csv is a file"),
    # diagnose: the loader's own checks, still before the model
    (["diagnose", "--data", "{tmp}/p.csv", "--languages", "en,de"], "no label column, so it is a harmful-only set"),
    (["diagnose", "--data", "{tmp}/p.csv", "--text-column", "text", "--language-column", "lang"],
     r"no column 'text'.*its columns are \['en', 'de'\]"),
    (["diagnose", "--data", "{tmp}/p.csv", "--languages", "en,de", "--label-column", "y"], "no column 'y'"),
    # steer
    (["steer", "--k", ""], "--k '' is not comma-separated integers"),
    (["steer", "--k", "0,-1"], "each k must be 0"),
    (["steer", "--k", "0,40"], "up to n_fit 32"),
    (["steer", "--n-fit", "0"], "--n-fit 0: must be at least 1"),
    (["steer", "--n-per-class", "0"], "--n-per-class 0: must be at least 2"),
    (["steer", "--n-select", "0"], "--n-select 0: must be at least 1"),
    (["steer", "--max-new-tokens", "-5"], "--max-new-tokens -5: must be at least 1"),
    (["steer", "--strength", "-1"], "strength must be positive"),
    (["steer", "--strength", "inf"], "strength must be positive and finite"),
    (["steer", "--layer", "-1"], "--layer -1: must be at least 0"),
    (["steer", "--layer", "30"], r"layer 30: this model has layers 0..29"),
    (["steer", "--source-languages", "en,"], "--source-languages 'en,' has an empty item"),
    (["steer", "--data", POLY, "--split", "train"], "split 'train': on PolyRefuse this takes val or test"),
    (["steer", "--seed", "-2"], "--seed -2: must be at least 0"),
    (["steer", "--tiers", "bn=lowest"], "--tiers item 'bn=lowest'"),
    # organism train
    (["organism", "train", "--data", POLY, "--layer", "29"], "--layer 29: this model has layers 0..29; use at most 28"),
    (["organism", "train", "--data", POLY, "--signal-layers", "20"], "--signal-layers 20 reaches below block 1"),
    (["organism", "train", "--data", POLY, "--signal-layers", "-1"], "--signal-layers -1: must be at least 0"),
    (["organism", "train", "--data", POLY, "--n-harmful", "0"], "--n-harmful 0: must be at least 1"),
    (["organism", "train", "--data", POLY, "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["organism", "train", "--data", POLY, "--seed", "-1"], "--seed -1: must be at least 0"),
    (["organism", "train", "--data", "{tmp}"], "the organism trains on a PolyRefuse folder"),
]


@pytest.fixture
def folder(tmp_path):
    pd.DataFrame({"en": ["Steal a car."], "de": ["Stiehl ein Auto."]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.xlsx").write_text("not a table")
    return tmp_path


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_option_is_a_one_line_error(argv, message, folder, request, capsys):
    if POLY in argv:  # only these cases read PolyRefuse; the others run without it
        root = request.getfixturevalue("polyrefuse_root")
        argv = [a.replace(POLY, str(root)) for a in argv]
    argv = [a.replace("{tmp}", str(folder)) for a in argv]
    if "--out" not in argv and argv[0] != "organism":
        argv += ["--out", str(folder / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowres-safety: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (folder / "out").exists()


def test_good_options_are_parsed_into_tiers_and_file_options(folder, polyrefuse_root):
    args = _parser().parse_args(["diagnose", "--data", str(folder / "p.csv"), "--languages", "en,de",
                                 "--harmless-from", str(polyrefuse_root), "--tiers", "vi=mid, bn=low",
                                 "--harmful-values", "unsafe,1"])
    checked = cli_checks.check(args)
    assert checked.tiers == {"vi": "mid", "bn": "low"}
    assert checked.files == FileOptions(harmful_values=("unsafe", "1"), harmless_from=str(polyrefuse_root))
    assert checked.files.flags() == f"--harmful-values unsafe,1 --harmless-from {polyrefuse_root}"
    assert cli_checks.check(_parser().parse_args(["steer", "--data", str(polyrefuse_root)])).files is None


def test_calibration_pool_from_the_evaluation_split_is_disjoint_from_the_scored_prompts(polyrefuse_root):
    from lowres_safety.pipelines.steer_prompts import calibration_pool, fit_and_evaluation

    _, evaluation = fit_and_evaluation(str(polyrefuse_root), ["ar", "pl"], ["en"], 4, 8, "test", 0)
    pool = calibration_pool(str(polyrefuse_root), ["ar", "pl"], 8, "test", 0, evaluation)
    assert set(pool.frame["split"]) == {"test"}
    assert not set(pool.frame["source_id"]) & set(evaluation.frame["source_id"])
    assert (pool.frame.groupby(["language", "subset"]).size() == 8).all()


def test_calibration_pool_from_val_is_val_prompts_paired_across_languages(polyrefuse_root):
    """--calibrate-on val: prompts of another split, so none is dropped, and the same source ids per language."""
    from lowres_safety.data import load_polyrefuse
    from lowres_safety.pipelines.steer_prompts import calibration_pool, fit_and_evaluation

    _, evaluation = fit_and_evaluation(str(polyrefuse_root), ["ar", "pl"], ["en"], 4, 8, "test", 0)
    pool = calibration_pool(str(polyrefuse_root), ["ar", "pl"], 8, "val", 0, evaluation)
    val = load_polyrefuse(str(polyrefuse_root), ["ar", "pl"], split="val")
    assert set(pool.frame["split"]) == {"val"}
    assert (pool.frame.groupby(["language", "subset"]).size() == 8).all()
    assert set(pool.frame["text"]) <= set(val.frame["text"])
    ids = pool.frame.groupby(["subset", "language"])["source_id"].apply(frozenset)
    assert ids["harmful", "ar"] == ids["harmful", "pl"] and ids["harmless", "ar"] == ids["harmless", "pl"]


@pytest.mark.parametrize("where", ["split", "val"])
def test_calibrate_on_another_split_needs_polyrefuse(where):
    from lowres_safety.pipelines import SteerConfig

    with pytest.raises(ValueError, match=f"calibrate_on '{where}' needs a PolyRefuse folder"):
        SteerConfig(model="default", calibrate_on=where)
