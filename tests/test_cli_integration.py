import json

import numpy as np
import pandas as pd
import pytest
from helpers import check_report_renders

import lowres_safety as ls
from lowres_safety import data, directions, extract, probing
from lowres_safety.cli import main
from lowres_safety.pipelines import SteerConfig
from lowres_safety.utility import load_mc_demo


def test_diagnose_writes_results_and_an_offline_report(tmp_path):
    out = tmp_path / "run"
    code = main(["diagnose", "--languages", "en,sw", "--n-per-class", "4", "--seed", "1", "--out", str(out), "--no-cache",
                 "--max-new-tokens", "4", "--analysis-per-class", "2", "--form-control"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["languages"] == {"en": "high", "sw": "low"} and results["data"] == "natural"
    assert results["form_control"] and results["calibration"]["gap"] == results["gap_form_controlled"]
    assert results["gap_raw"] != results["gap_form_controlled"]  # both kept; --form-control picked the controlled
    assert {(r["language"], r["control"]) for r in results["form_controls"]} == {
        (lang, c) for lang in ("en", "sw") for c in ("length", "form_probe", "direction", "residualised")}
    assert {r["language"] for r in results["twins_control"]} == {"en", "sw"}  # the twins beside the natural set
    rows = results["separability"]
    assert {"language", "tier", "layer", "position", "direction", "auroc", "probe_accuracy"} <= set(rows[0])
    assert len(rows) == 2 * 30 * 2 * 2  # languages x layers x positions x (pooled, own)
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    refusal = results["refusal"]
    assert {(r["language"], r["subset"], r["judge"]) for r in refusal} == {
        (lang, subset, judge) for lang in ("en", "sw") for subset in ("harmful", "harmless")
        for judge in ("substring", "logit")}
    assert all(r["n"] == 4 and 0 <= r["rate"] <= 100 and set(r) == {"language", "tier", "subset", "judge", "rate", "n"}
               for r in refusal)
    calibration = results["calibration"]
    assert [g["language"] for g in calibration["gap"]] == ["en", "sw"]
    assert all(g["failure_type"] in ("representation failure", "action failure", "acted on") for g in calibration["gap"])
    assert [row["language"] for row in calibration["loophole"]] == ["sw"]
    recoverability = results["recoverability"]
    assert {r["language"] for r in recoverability} == {"sw"} and {r["budget"] for r in recoverability} == {1, 2}
    # without --full, where it breaks is not run (test_diagnosis_verdict runs it) and the report says how to add it
    assert results["full"] is False and results["selection"] is None and results["attribution"] is None
    assert calibration["dose_response"] is None and results["interventional_transfer"] is None
    assert set(results["timing"]) >= {"extract_s", "generation_s", "total_s"} and "selection_s" not in results["timing"]
    page = (out / "report.html").read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js embedded, no CDN
    check_report_renders(out / "report.html")
    assert page.index("The verdict") < page.index("1. Is the harmfulness representation there?")
    for heading in ("1. Is the harmfulness representation there?", "1b. Harm or form?", "1c. The twins",
                    "2. Is it acted on?", "3. How big is the gap", "4–6. Where does it break? (not run)",
                    "lowres-safety diagnose --full", "7. Can a few examples fix it?",
                    "8.1 How few target examples does a readout need?", "8.2 The gate by subspace rank",
                    "8.3 What does one added language bring?", "8.4 Does the gate work on another data set?"):
        assert heading in page
    # the paper's analyses: on the natural set's train, val and test prompts, sources en, the twins as the OOD set
    assert results["paper_analyses"]["tables"] == [f"analyses/{name}.csv" for name in (
        "recoverability", "rank_sweep", "subspace_transfer", "ood")]
    recovered = pd.read_csv(out / "analyses" / "recoverability.csv")
    assert set(recovered["language"]) == {"sw", "__macro__", "__macro_low__"} and set(recovered["budget"]) == {1, 2, 4}
    assert set(pd.read_csv(out / "analyses" / "ood.csv")["language"]) == {"en", "sw", "__macro__"}
    assert "paper_analyses_s" in results["timing"]


def test_diagnose_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["diagnose", "--languages", "en,xx", "--out", str(out)]) == 2
    assert "['xx'] not in the built-in natural set" in capsys.readouterr().err
    assert main(["diagnose", "--languages", "sw,yo", "--out", str(out)]) == 2
    assert "high-resource language" in capsys.readouterr().err
    assert not out.exists()


def test_english_direction_separates_polyrefuse_english(default_model, polyrefuse_root):
    """Integration on real data: we measured best-layer AUROC about 0.99 for SmolLM2-135M."""
    prompts = data.load_polyrefuse(polyrefuse_root, ["en"], split="train", n_per_class=64, seed=0)
    acts = extract(default_model, prompts, "all", "t_post_inst", progress=False)
    sep = probing.separability(acts, directions.pooled(acts, ["en"]), probe=False)
    assert sep["auroc"].max() >= 0.95


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny random chat model saved as a local folder: what ``--model PATH`` loads (mechanics, not numbers)."""
    from helpers import save_chat_model

    return save_chat_model(tmp_path_factory.mktemp("tiny-chat"), num_hidden_layers=24)  # CAST: blocks 15-23


def test_steer_writes_rows_for_every_method_and_resumes(tmp_path, monkeypatch, tiny_folder):
    """The whole steer command on a tiny model from a folder; the organism's numbers are in the README."""
    out = tmp_path / "steer"
    mc = tmp_path / "mc.tsv"  # two built-in questions per language keep the utility column cheap here
    load_mc_demo(["en", "sw"]).groupby("language").head(2).assign(subject_category=["STEM", "Other"] * 2).to_csv(
        mc, sep="\t", index=False)
    args = ["steer", "--languages", "en,sw", "--source-languages", "en,de", "--k", "0,1", "--n-per-class", "2",
            "--max-new-tokens", "3", "--layer", "2", "--n-select", "2", "--out", str(out), "--mc", str(mc),
            "--model", str(tiny_folder), "--sweeps"]
    assert main(args) == 0
    results = json.loads((out / "steer.json").read_text())
    rows = results["rows"]
    assert results["strength"] == 1.0 and results["alpha"] > 0
    keys = {"language", "tier", "method", "k", "harmful_refusal", "harmless_refusal", "selectivity", "kl", "kl_ablated",
            "mc_accuracy", "gate_balanced_accuracy", "cast_layer", "cast_threshold", "cast_comparator", "cast_tuned_on",
            "adapted_from", "seed", "mc_margin", "mc_entropy", "mc_gate_fire_rate", "mc_accuracy[Other]",
            "mc_accuracy[STEM]"}
    assert all(set(r) == keys for r in rows)
    assert {(r["method"], r["k"]) for r in rows} == {("none", 0), ("ablation", 0), ("addition", 0), ("adasteer", 0),
                                                     ("adasteer", 32), ("cast", 0), ("cast", 32), ("gate", 0),
                                                     ("gate", 1)}
    assert results["ablation"] == "gate_layer" and results["recalibration"] == "paper"
    for r in rows:
        assert r["selectivity"] == r["harmful_refusal"] - r["harmless_refusal"]
        assert r["mc_accuracy"] in (0.0, 50.0, 100.0)  # two items in each language, one per category
        assert r["mc_accuracy"] == (r["mc_accuracy[STEM]"] + r["mc_accuracy[Other]"]) / 2
        assert (r["gate_balanced_accuracy"] is None) == (r["method"] != "gate")
        assert (r["mc_gate_fire_rate"] is None) == (r["method"] != "gate") and r["mc_entropy"] <= np.log(4) + 1e-9
        assert (r["cast_layer"] is None) == (r["method"] != "cast")
        if r["method"] in ("adasteer", "cast"):  # builtin data: the fit half's low-resource language, sw
            assert r["adapted_from"] == ("source languages" if r["k"] == 0 else "pooled sw")
        if r["method"] == "adasteer":
            assert r["kl"] == pytest.approx(0.0, abs=1e-6)  # released placement: generated tokens only
        if r["method"] == "none":
            assert r["kl"] == 0
        if r["method"] == "ablation":
            assert r["kl"] > 0
    page = (out / "report.html").read_text()
    assert "Plotly.newPlot" in page and "Which direction does the model act through?" in page
    assert "Utility by subject category" in page and "Refusal as the steering strength grows" in page
    assert "Where does ablation remove refusal?" in page
    assert results["paper_analyses"]["tables"] == ["analyses/strength.csv", "analyses/ablation.csv"]
    strength = pd.read_csv(out / "analyses" / "strength.csv")
    assert sorted(set(strength["strength"])) == list(ls.analyses.sweeps.STRENGTHS[::2]) and set(strength["n"]) == {2}
    ablation = pd.read_csv(out / "analyses" / "ablation.csv")
    assert set(ablation["layer"]) == {-1, 0, 4, 8, 12, 16, 20} and set(ablation["source"]) == {"none", "en", "hrl_pooled"}
    check_report_renders(out / "report.html")
    assert len(results["selection"]["table"]) == 24 and {"selection_s", "transfer_s"} <= set(results["timing"])
    transfer = {(r["source"], r["target"]) for r in results["interventional_transfer"]}
    assert transfer == {(a, b) for a in ("en", "sw") for b in ("en", "sw")}
    fix = ls.load_fix(out / "fix")  # the fitted fix, portable: every target's k > 0 gate beside the source gate
    assert sorted(fix.gates) == ["en-k1", "source", "sw-k1"] and fix.layer == 2 and fix.alpha == results["alpha"]

    # a rerun reads every finished part instead of generating again
    import lowres_safety.pipelines.memo as memo

    def no_generation(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(memo, "generate", no_generation)
    monkeypatch.setattr(ls.analyses.sweeps, "generate", no_generation)  # the sweeps' steps are kept too
    assert main(args) == 0
    assert json.loads((out / "steer.json").read_text())["rows"] == rows
    monkeypatch.undo()

    # the results file holds the run's config: what `steer --config` repeats (diagnose's repeat runs in test_pipelines)
    from lowres_safety.cli import _parser, checks, steer_config

    parsed = _parser().parse_args(args)
    assert SteerConfig.load(out / "steer.json") == steer_config(parsed, checks.check(parsed))


def test_steer_bad_input_exits_2(tmp_path, capsys):
    assert main(["steer", "--k", "0,-1", "--out", str(tmp_path)]) == 2
    assert "k must be" in capsys.readouterr().err
    assert main(["steer", "--k", "a", "--out", str(tmp_path)]) == 2
    assert main(["steer", "--n-per-class", "50", "--out", str(tmp_path)]) == 2
    assert "at most" in capsys.readouterr().err
    assert main(["steer", "--strength", "0", "--out", str(tmp_path)]) == 2
    assert "strength must be positive" in capsys.readouterr().err
