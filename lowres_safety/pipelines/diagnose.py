"""``diagnose(config)``: the full diagnosis as one library call, and its results.

    import lowres_safety as ls
    result = ls.diagnose(ls.DiagnoseConfig(languages=("en", "de", "sw")))
    result.gap            # the gap table: one row per language, with its failure type
    result.save("runs/diagnose")   # results.json, report.html, completions.csv

The stages themselves are :func:`lowres_safety.pipelines.diagnosis.analyse`; this module
loads the model and prompts the config names, runs them, and writes what they found.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import judges
from ..data import extra_tiers, has_analysis_splits, load_builtin, tier_of
from ..data.prompt_files import describe_origins, open_prompts, origin_table
from ..models import load_model, model_id
from ..organisms.ground_truth import for_model
from . import analyses_report, diagnosis, diagnosis_report
from .config import DiagnoseConfig
from .report import Section, records, write_html, write_json

__all__ = ["DiagnoseResult", "diagnose"]


@dataclass
class DiagnoseResult:
    """What a diagnosis found: the :class:`~lowres_safety.pipelines.diagnosis.Diagnosis`, its JSON and its report."""

    config: DiagnoseConfig
    found: diagnosis.Diagnosis
    results: dict  # the JSON of results.json (config included)
    header: str  # the report's first paragraph
    timing: dict[str, float] = field(default_factory=dict)
    paper: analyses_report.PaperAnalyses | None = None  # the paper's representation analyses (section 8)

    @property
    def gap(self) -> pd.DataFrame:
        """Representation against action per language, with the failure type (section 3)."""
        return self.found.gap

    @property
    def separability(self) -> pd.DataFrame:
        return self.found.separability

    @property
    def refusal(self) -> pd.DataFrame:
        return self.found.refusal

    @property
    def completions(self) -> pd.DataFrame:
        return self.found.completions

    def save(self, folder: str | Path) -> Path:
        """Write ``results.json``, ``report.html``, ``completions.csv`` and the paper's analyses' tables
        (``analyses/<name>.csv``) into ``folder`` (atomically each)."""
        folder = Path(folder)
        t = time.perf_counter()
        write_html(folder / "report.html", "lowres_safety diagnosis",
                   diagnosis_report.sections(self.found, self.config.max_new_tokens) + self._paper_sections(),
                   self.header)
        if self.paper is not None:
            self.paper.save(folder)  # analyses/<name>.csv
        self.found.completions.to_csv(folder / "completions.csv", index=False)
        self.results["timing"] = {**self.timing, "report_s": time.perf_counter() - t}
        write_json(folder / "results.json", self.results)
        return folder

    def _paper_sections(self) -> list:
        if self.paper is not None:
            return analyses_report.sections(self.paper, number=8)
        if not self.config.analyses:
            return []
        return [Section("8. The paper's analyses (not run)", f"They fit on train prompts and score on test prompts; "
                        f"{self.config.data!r} has one split. PolyRefuse folders and the natural set have both.")]


def diagnose(config: DiagnoseConfig | None = None, *, progress: bool = True) -> DiagnoseResult:
    """Load the model and prompts ``config`` names, run every analysis of the report, and return what it found."""
    config = config or DiagnoseConfig()
    with extra_tiers(config.tiers):
        return _diagnose(config, progress)


def _diagnose(config: DiagnoseConfig, progress: bool) -> DiagnoseResult:
    t0 = time.perf_counter()
    judges.resolve(config.judge)  # a wrong judge fails before minutes of work
    prompts = open_prompts(config.data, config.languages, split=config.split, n_per_class=config.n_per_class,
                           seed=config.seed, files=config.files)
    if not any(tier_of(lang) == "high" for lang in prompts.languages):
        raise ValueError(f"diagnose needs at least one high-resource language for the pooled direction; "
                         f"got {prompts.languages}")
    model = load_model(config.model)
    load_s = time.perf_counter() - t0
    other = judges.other_split_prompts(config.data, prompts.languages, config.split, config.analysis_per_class,
                                       config.seed)
    logit = judges.learn_from_prompts(model, other)[0] if other is not None else None
    twins = None if config.data in ("builtin", "twins") else load_builtin(name="twins")
    found = diagnosis.analyse(model, prompts, seed=config.seed, cache=config.cache, probe_folds=config.probe_folds,
                              max_new_tokens=config.max_new_tokens, analysis_per_class=config.analysis_per_class,
                              judge=judges.resolve(config.judge, logit=logit), logit=logit, progress=progress,
                              form_control=config.form_control, controls=twins, truth=for_model(config.model),
                              full=config.full)
    t = time.perf_counter()
    paper = (analyses_report.representation(model, config.data, prompts.languages, found.gate_layer,
                                            n_per_class=config.n_per_class, seed=config.seed, twins=twins,
                                            full=config.full, progress=progress)
             if config.analyses and has_analysis_splits(config.data) else None)
    paper_s = time.perf_counter() - t
    results = {
        "config": config.to_dict(),
        "model": model_id(model),
        "data": config.data,
        "split": "demo" if config.data in ("builtin", "twins") else config.split,
        "seed": config.seed,
        "n_per_class": config.n_per_class,
        "analysis_per_class": config.analysis_per_class,
        "languages": {lang: tier_of(lang) for lang in prompts.languages},
        "origins": records(origin_table(prompts)),
        **diagnosis.results(found),
        "max_new_tokens": config.max_new_tokens,
        **({"paper_analyses": paper.summary()} if paper is not None else {}),
    }
    header = (f"<p>Model <b>{html.escape(results['model'])}</b>, data <b>{html.escape(config.data)}</b>, "
              f"{len(prompts)} prompts, seed {config.seed}. Prompts: {html.escape(describe_origins(prompts))}. "
              "Regenerate with <code>lowres-safety diagnose --config results.json</code> (the run's settings are "
              "its <code>config</code>).</p>")
    timing = {"load_model_s": load_s, **found.timing, "paper_analyses_s": paper_s, "total_s": time.perf_counter() - t0}
    return DiagnoseResult(config, found, results, header, timing, paper)
