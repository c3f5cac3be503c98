"""The paper's analyses (:mod:`lowres_safety.analyses`) in the reports: what ``diagnose`` and ``steer`` add.

``diagnose`` gains the representation analyses (:func:`representation`): few-shot
recoverability, the gate by rank, subspace transfer and the gate on the phrase-matched twins,
on the data's train, val and test prompts at the gate layer (seconds on cached activations;
``full`` adds the readout comparison, thousands of logistic fits). ``steer`` with ``sweeps``
gains the generation sweeps (:func:`steering_sweeps`): refusal as λ grows, and as the released
directional ablation moves through the layers. :func:`sections` turns either into report sections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import analyses, plots
from ..activations import ActivationSet, extract
from ..data import PromptSet, analysis_splits, in_tier
from ..directions import pc1_of_directions
from ..models import model_id
from .report import Section

__all__ = ["PaperAnalyses", "representation", "sections", "steering_sweeps", "sweep_runs"]

#: Budgets (examples per class) of the released recoverability and rank sweeps; those above a target's train
#: prompts are skipped.
BUDGETS = (1, 2, 4, 8, 16, 32, 64)
#: The report's strength sweep: every second λ of the released grid.
SWEEP_STRENGTHS = analyses.sweeps.STRENGTHS[::2]


@dataclass
class PaperAnalyses:
    """The tables of the analyses one run added (name -> tidy DataFrame) and where they were computed."""

    layer: int
    about: str  # the prompts and settings, one sentence for the report
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def summary(self) -> dict:
        """What a results file says of them: where they were computed and the files :meth:`save` writes."""
        return {"about": self.about, "tables": [f"analyses/{name}.csv" for name in self.tables]}

    def save(self, folder: str | Path) -> Path:
        """Each table as ``<folder>/analyses/<name>.csv``."""
        out = Path(folder) / "analyses"
        out.mkdir(parents=True, exist_ok=True)
        for name, table in self.tables.items():
            table.to_csv(out / f"{name}.csv", index=False)
        return out


def representation(model, data, languages: Sequence[str], layer: int, *, n_per_class: int | None = None,
                   seed: int = 0, seeds: Sequence[int] = range(10), budgets: Sequence[int] = BUDGETS,
                   twins: PromptSet | None = None, full: bool = False, progress: bool = True) -> PaperAnalyses:
    """The released representation analyses on ``data``'s train, val and test prompts
    (:func:`~lowres_safety.data.analysis_splits`) of ``languages`` at ``layer``: recoverability, rank sweep,
    subspace transfer, and the gate on ``twins`` (the released OOD transfer, 1-shot examples drawn from the
    twins themselves); ``full`` adds the readout comparison (3 seeds, budgets up to 8, ranks 1 and the largest)."""
    prompts = analysis_splits(data, languages, n_per_class=n_per_class, seed=seed)
    acts = extract(model, prompts, [layer], ("t_post_inst",), cache=True, progress=progress)
    high = in_tier(acts.where(split="train").prompts.languages, "high")
    if not high:
        raise ValueError(f"the paper's analyses need a high-resource language with train prompts; got {languages}")
    name = model_id(model)
    targets = [lang for lang in prompts.languages if lang not in high]
    rank = min(10, len(high))
    tables = {
        "recoverability": analyses.recoverability(acts, layer, source_languages=high, budgets=budgets, seeds=seeds,
                                                  model=name, progress=progress),
        "rank_sweep": analyses.rank_sweep(acts, layer, source_languages=high, budgets=(0, *budgets), seeds=seeds,
                                          model=name, progress=progress),
        "subspace_transfer": analyses.subspace_transfer(acts, layer, rank=rank, model=name, progress=progress),
    }
    if twins is not None:
        twin_acts = extract(model, twins.where(language=[lang for lang in twins.languages if lang in languages]),
                            [layer], ("t_post_inst",), cache=True, progress=progress)
        tables["ood"] = analyses.ood_transfer(acts.where(split="train", language=high), twin_acts, layer, rank=rank,
                                              seeds=seeds, model=name, progress=progress)
    if full and targets:
        tables["readouts"] = analyses.compare_readouts(
            acts, layer, targets=targets, budgets=[b for b in budgets if b <= 8], seeds=list(seeds)[:3],
            ranks=sorted({1, rank}), direction_groups=("hrl",), subspace_groups=("hrl",), random_subspaces=True,
            threshold_source="target_budget", model=name, progress=progress)
    counts = prompts.frame.groupby("split").size().to_dict()
    about = (f"{prompts.origin}: {', '.join(f'{n} {s}' for s, n in counts.items())} prompts; sources {', '.join(high)} "
             f"(train), layer {layer}, seeds {len(list(seeds))}")
    return PaperAnalyses(layer, about, tables)


def _sweep_layers(n_layers: int, every: int) -> range:
    return range(0, n_layers, every)


def _sweep_sources(source: Sequence[str]) -> tuple[str, ...]:
    """English's direction (else the first source's) and the pooled high-resource one."""
    return tuple(dict.fromkeys(["en" if "en" in source else source[0], "hrl_pooled"]))


def sweep_runs(n_layers: int, source: Sequence[str] = ("en",), every: int = 4) -> int:
    """Generations of each harmful prompt :func:`steering_sweeps` runs: the strengths, each ablation source at
    every ``every``-th layer, and the unablated model."""
    return len(SWEEP_STRENGTHS) + len(_sweep_sources(source)) * len(_sweep_layers(n_layers, every)) + 1


def steering_sweeps(model, prompts: PromptSet, fit_acts: ActivationSet, source: Sequence[str], layer: int, *,
                    judge=None, max_new_tokens: int = 24, batch_size: int = 16, every: int = 4,
                    store: str | Path | None = None, progress: bool = True) -> PaperAnalyses:
    """The released generation sweeps on the harmful ``prompts``: λ·v̂ added at ``layer`` (v̂ the pc1 of the
    source languages' directions; every second λ of the released grid) and the released directional ablation at
    every ``every``-th layer (English's and the pooled high-resource direction). ``fit_acts``: the source
    prompts at every layer (``t_post_inst``). ``store``: a folder keeping each finished step (resumes a rerun)."""
    v = pc1_of_directions(fit_acts, list(source), layer)
    common = {"judge": judge, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "progress": progress}
    kept = (lambda name: Path(store) / name) if store is not None else (lambda name: None)
    tables = {"strength": analyses.strength_sweep(model, prompts, v, layer, strengths=SWEEP_STRENGTHS,
                                                  store=kept("strength"), **common),
              "ablation": analyses.ablation_sweep(model, prompts, fit_acts,
                                                  layers=_sweep_layers(model.cfg.n_layers, every),
                                                  sources=_sweep_sources(source), store=kept("ablation"), **common)}
    n = len(prompts.where(subset="harmful"))
    return PaperAnalyses(layer, f"{n} harmful prompts, {max_new_tokens} new tokens, layer {layer}", tables)


def _macro(table: pd.DataFrame) -> str:
    """The macro row to plot: over the low-resource targets where there are some, else over all."""
    return "__macro_low__" if (table["language"] == "__macro_low__").any() else "__macro__"


def _recoverability(t: pd.DataFrame) -> tuple[str, str, tuple, pd.DataFrame]:
    macro = _macro(t)
    table = (t[t["language"] == macro].groupby(["readout", "control", "budget"])[["auc", "balanced_accuracy"]]
             .mean().unstack("budget").round(3))
    table.columns = [f"{m} b={b}" for m, b in table.columns]
    return ("How few target examples does a readout need? (released recoverability)",
            "Readouts fitted on b + b examples of each target language alone, and the high-resource direction kept "
            "fixed, scored on the target's test prompts (scripts/recoverability/compute_probe_method_comparison.py).",
            ((plots.fewshot_curves(t, language=macro), "Mean over seeds; the caption says how to read it."),),
            table.reset_index())


def _rank_sweep(t: pd.DataFrame) -> tuple:
    macro = _macro(t)
    table = t[t["language"] == macro].groupby(["rank", "budget"])["balanced_accuracy"].mean().unstack("budget")
    table.columns = [f"balanced_accuracy b={b}" for b in table.columns]
    return ("The gate by subspace rank (released rank sweep)",
            "The gate at each rank, refitted on the sources plus b + b target examples (b = 0: as fitted), one "
            "threshold for every target, scored on test.",
            ((plots.rank_curves(t, language=macro), "Mean over seeds."),), table.round(3).reset_index())


def _subspace_transfer(t: pd.DataFrame) -> tuple:
    rows = t[t["language"].str.startswith("__macro") & (t["split"] == "test")]
    table = rows.pivot_table(index=["condition", "added"], columns="language", values="f1").round(3).reset_index()
    figures = ((plots.subspace_transfer_heatmap(t), "Test F1 gain per target."),) if (
        t["condition"] == "hrl_plus_lrl_full").any() else ()
    return ("What does one added language bring? (released subspace transfer)",
            "Zero-shot gates fitted on the high-resource languages alone, or with one mid- or low-resource language "
            "added, scored on the other targets at the source threshold (test F1).", figures, table)


def _ood(t: pd.DataFrame) -> tuple:
    macro = t[t["language"] == "__macro__"]
    table = macro.groupby(["gate", "shot"])["balanced_accuracy"].agg(["mean", "std"]).round(3).reset_index()
    figures = [(plots.ood_bars(t), "Per language, mean over seeds.")]
    if (t["evaluation_group"] == "category").any():
        figures.append((plots.ood_category_heatmap(t), "By the data set's harm category."))
    return ("Does the gate work on another data set? (released OOD transfer, on the twins)",
            "The source gate scored on the phrase-matched twins: as fitted (0-shot) and with one example per class "
            "of each language (1-shot, drawn from the twins, as the released run for sets without a train split).",
            tuple(figures), table.rename(columns={"mean": "balanced_accuracy", "std": "balanced_accuracy_sd"}))


def _readouts(t: pd.DataFrame) -> tuple:
    macro = t[(t["language"] == "__macro__") & (t["split"] == "test") & (t["threshold_scope"] == "global")]
    same = macro[macro["method"].isin(["subspace_logistic", "pca_subspace_logistic", "random_subspace_logistic"])]
    table = same.groupby(["rank", "budget", "method"])["balanced_accuracy"].mean().unstack("method").round(3)
    return ("Is the high-resource subspace special? (released readout comparison)",
            "The gate (subspace_logistic) against subspaces of the same rank not built from the harm directions "
            "(principal components of the source activations, random), each refitted with the same b + b target "
            "examples, thresholds from those examples; macro test balanced accuracy.",
            ((plots.readout_curves(t), "Mean over seeds."),), table.reset_index())


def _strength(t: pd.DataFrame) -> tuple:
    return ("Refusal as the steering strength grows (released strength sweep)",
            "λ·v̂ added at the steering layer from the last prompt token on (v̂ the first principal component of the "
            "source languages' directions), refusal judged on the generated answers to harmful prompts.",
            ((plots.strength_curves(t), "Mean over each tier's languages."),),
            analyses.peak_strengths(t).round(2))


def _ablation(t: pd.DataFrame) -> tuple:
    table = t.groupby(["source", "layer"])["refusal"].mean().round(1).reset_index()
    return ("Where does ablation remove refusal? (released directional ablation, per layer)",
            "Each layer's block output ablated alone, with the direction read at that layer; refusal judged on the "
            "generated answers to harmful prompts (layer -1: no ablation).",
            ((plots.ablation_curves(t), "Mean over languages."),), table)


#: Table name -> its section (title, intro, figures, table), in report order.
SECTIONS: dict[str, Callable[[pd.DataFrame], tuple]] = {
    "recoverability": _recoverability, "readouts": _readouts, "rank_sweep": _rank_sweep,
    "subspace_transfer": _subspace_transfer, "ood": _ood, "strength": _strength, "ablation": _ablation}


def sections(found: PaperAnalyses, number: int | None = None) -> list[Section]:
    """One report section per table of ``found``, numbered ``number.1``, ``number.2``, … when ``number`` is given."""
    out = []
    for i, name in enumerate(n for n in SECTIONS if n in found.tables):
        title, intro, figures, table = SECTIONS[name](found.tables[name])
        prefix = f"{number}.{i + 1} " if number is not None else ""
        out.append(Section(prefix + title, f"{intro} ({found.about}.)", figures, table))
    return out
