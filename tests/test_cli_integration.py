import json

from lowres_safety import data, directions, extract, probing
from lowres_safety.cli import main


def test_diagnose_writes_results_and_an_offline_report(tmp_path):
    out = tmp_path / "run"
    code = main(["diagnose", "--languages", "en,sw", "--n-per-class", "4", "--seed", "1", "--out", str(out), "--no-cache"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["languages"] == {"en": "high", "sw": "low"} and results["data"] == "builtin"
    rows = results["separability"]
    assert {"language", "tier", "layer", "position", "direction", "auroc", "probe_accuracy"} <= set(rows[0])
    assert len(rows) == 2 * 30 * 2 * 2  # languages x layers x positions x (pooled, own)
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)
    page = (out / "report.html").read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js embedded, no CDN


def test_diagnose_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["diagnose", "--languages", "en,xx", "--out", str(out)]) == 2
    assert "['xx'] not in the built-in demo set" in capsys.readouterr().err
    assert main(["diagnose", "--languages", "sw,yo", "--out", str(out)]) == 2
    assert "high-resource language" in capsys.readouterr().err
    assert not out.exists()


def test_english_direction_separates_polyrefuse_english(default_model, polyrefuse_root):
    """Integration on real data: we measured best-layer AUROC about 0.99 for SmolLM2-135M."""
    prompts = data.load_polyrefuse(polyrefuse_root, ["en"], split="train", n_per_class=64, seed=0)
    acts = extract(default_model, prompts, "all", "t_post_inst", progress=False)
    sep = probing.separability(acts, directions.pooled(acts, ["en"]), probe=False)
    assert sep["auroc"].max() >= 0.95
