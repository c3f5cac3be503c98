import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lowres_safety import data, directions, plots, probing
from lowres_safety.activations import ActivationSet


def planted(languages=("en", "de", "sw"), n=20, d=32, layers=(0, 1, 2), strength=(0.0, 1.0, 4.0), seed=0):
    """Synthetic activations: harmful = harmless + strength[layer] * a shared planted direction."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g)
    v = v / v.norm()
    frames, blocks = [], []
    for lang in languages:
        for subset in ("harmful", "harmless"):
            x = torch.randn(n, len(layers), 1, d, generator=g)
            if subset == "harmful":
                x += torch.tensor(strength)[None, :, None, None] * v
            blocks.append(x)
            frames.append(pd.DataFrame({"id": [f"{lang}-{subset}-{i}" for i in range(n)], "text": "t", "language": lang,
                                        "subset": subset, "split": "train", "source_id": [f"{subset}{i}" for i in range(n)]}))
    prompts = data.PromptSet(pd.concat(frames, ignore_index=True), "planted")
    return ActivationSet(torch.cat(blocks), prompts, tuple(layers), ("t_post_inst",)), v


def test_vectorised_auroc_equals_sklearn():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 3, 2)).round(1)  # rounding creates ties
    labels = rng.integers(0, 2, 40)
    ours = probing.auroc(scores, labels)
    for i in range(3):
        for j in range(2):
            assert ours[i, j] == pytest.approx(roc_auc_score(labels, scores[:, i, j]))


def test_planted_direction_is_recovered_and_separates_by_strength():
    acts, v = planted(n=200, strength=(0.0, 1.0, 8.0))
    pooled = directions.pooled(acts, ["en", "de"])
    assert torch.nn.functional.cosine_similarity(pooled[2, 0], v, dim=0) > 0.99
    sep = probing.separability(acts, pooled, probe=False)
    by_layer = sep[sep["language"] == "sw"].set_index("layer")["auroc"]  # held out of the direction
    assert by_layer[0] < 0.6 < by_layer[1] < by_layer[2]
    assert by_layer[2] > 0.99
    assert set(sep["direction"]) == {"pooled"} and len(sep) == 3 * 3


def test_pooled_is_the_difference_of_pooled_means():
    acts, _ = planted()
    sub = acts.where(language=["en", "de"])
    x, y = sub.acts, sub.labels.bool()
    torch.testing.assert_close(directions.pooled(acts, data.tier("high")), x[y].mean(0) - x[~y].mean(0))
    with pytest.raises(ValueError, match="none of"):
        directions.pooled(acts, ["zh"])


def test_first_pc_of_parallel_directions_is_their_axis():
    acts, v = planted(n=300, strength=(6.0, 6.0, 6.0))
    pc = directions.first_pc(directions.per_language(acts))
    assert torch.nn.functional.cosine_similarity(pc[1, 0], v, dim=0) > 0.98  # sign aligned too


def test_cosine_matrix_is_symmetric_with_unit_diagonal():
    acts, _ = planted(n=100)
    cos = directions.cosine_matrix(directions.per_language(acts), acts.layers, acts.positions)
    grid = cos[cos["layer"] == 2].pivot(index="language_a", columns="language_b", values="cosine")
    np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-6)
    np.testing.assert_allclose(grid.values, grid.values.T, atol=1e-6)
    # expected cosine of two noisy estimates: s^2 / (s^2 + 2d/n) = 16 / 16.64 = 0.96
    assert grid.values.min() > 0.9
    assert cos.loc[(cos["layer"] == 0) & (cos["language_a"] != cos["language_b"]), "cosine"].abs().max() < 0.5
    assert plots.cosine_heatmap(cos, layer=2).layout.title.text.startswith("Cosine")


def test_probe_finds_a_separable_language_and_not_noise():
    acts, _ = planted(n=40, strength=(0.0, 0.0, 6.0))
    sep = probing.separability(acts, own=True)
    assert sep.loc[sep["layer"] == 2, "probe_accuracy"].min() > 0.9
    assert sep.loc[sep["layer"] == 0, "probe_accuracy"].mean() < 0.7


def test_wrong_direction_shape_and_single_class_are_errors():
    acts, _ = planted()
    with pytest.raises(ValueError, match="direction has shape"):
        probing.project(acts, torch.zeros(3, 1, 7))
    with pytest.raises(ValueError, match="only harmful"):
        probing.separability(acts.where(subset="harmful"), probe=False, own=True)


def test_separability_plot_has_one_trace_per_language():
    acts, v = planted()
    sep = probing.separability(acts, directions.pooled(acts), probe=False)
    fig = plots.separability(sep, direction="pooled")
    assert sorted(t.name for t in fig.data) == ["de, high", "en, high", "sw, low"]  # one line each
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    proj = probing.projections(acts, v[None, None].expand(3, 1, -1), 2, "t_post_inst")
    assert len(proj) == len(acts) and plots.projection_distributions(proj).layout.title.text


def test_heldout_projections_use_a_direction_fitted_without_the_prompt_or_its_translations():
    acts, _ = planted(n=20, strength=(0.0, 1.0, 4.0))
    held = probing.heldout_projections(acts, ["en", "de"], 1, folds=4, seed=3)
    assert held.groupby(["subset", "source_id"])["fold"].nunique().max() == 1  # translations share a fold
    assert held.groupby(["subset", "fold"]).size().nunique() == 1  # balanced: 5 sources x 3 languages each
    frame, x = acts.prompts.frame, acts.acts[:, 1, 0].double().numpy()
    source, harmful = frame["language"].isin(["en", "de"]).to_numpy(), acts.prompts.labels == 1
    for i in (0, 25, 77, 119):
        fit = source & (held["fold"].to_numpy() != held["fold"].iloc[i])
        v = x[fit & harmful].mean(0) - x[fit & ~harmful].mean(0)
        assert held["projection"].iloc[i] == pytest.approx(x[i] @ v / np.linalg.norm(v), abs=1e-4)


def test_heldout_auroc_is_chance_on_noise_where_in_sample_auroc_is_not():
    """With no planted signal (layer 0), the in-sample pooled direction still 'separates' its own prompts."""
    acts, _ = planted(languages=("en",), n=20, d=64, strength=(0.0, 0.0, 0.0), seed=1)
    in_sample = float(probing.auroc(probing.project(acts, directions.pooled(acts, ["en"]))[:, 0, 0].numpy(),
                              acts.prompts.labels))
    held = probing.heldout_projections(acts, ["en"], 0, folds=5)
    out = float(probing.auroc(held["projection"].to_numpy(), acts.prompts.labels))
    assert in_sample > 0.95 and abs(out - 0.5) < 0.2


def test_the_own_column_is_each_languages_in_sample_mean_difference_auroc():
    """Catches: the own-direction column scored with the pooled direction, with another language's direction,
    or with the sign flipped. Reference: scikit-learn's AUROC of the projection on the language's own
    difference of means. The planted languages differ in which axis carries the signal."""
    g = torch.Generator().manual_seed(3)
    frames, blocks = [], []
    for i, lang in enumerate(("en", "de", "sw")):
        for subset in ("harmful", "harmless"):
            x = torch.randn(15, 1, 1, 6, generator=g)
            if subset == "harmful":
                x[..., i] += 0.8  # each language its own axis, weakly
            blocks.append(x)
            frames.append(pd.DataFrame({"id": [f"{lang}-{subset}-{j}" for j in range(15)], "text": "t",
                                        "language": lang, "subset": subset, "split": "x",
                                        "source_id": [f"{subset}{j}" for j in range(15)]}))
    acts = ActivationSet(torch.cat(blocks), data.PromptSet(pd.concat(frames, ignore_index=True), "planted"), (0,),
                         ("t_post_inst",))
    sep = probing.separability(acts, directions.pooled(acts, ["en"]), own=True, probe=False)
    own = sep[sep["direction"] == "own"].set_index("language")["auroc"]
    pooled = sep[sep["direction"] != "own"].set_index("language")["auroc"]
    for lang in ("en", "de", "sw"):
        sub = acts.where(language=lang)
        x = sub.at(0, "t_post_inst").double().numpy()
        y = sub.prompts.labels
        d = x[y == 1].mean(0) - x[y == 0].mean(0)
        assert own[lang] == pytest.approx(roc_auc_score(y, x @ d))
    assert abs(own["sw"] - pooled["sw"]) > 0.1  # the pooled English direction misses sw's axis: the columns differ
