"""Prompt sets: PolyRefuse in its upstream layout, the built-in demo set, resource tiers.

A :class:`PromptSet` is one row per prompt (``id, text, language, subset, split,
source_id``, and optionally ``origin``: which file or set a row came from). ``source_id``
is shared by the translations of one English original, so prompts are parallel across
languages and paired metrics (English refuses, Swahili complies) can be computed.
Sampling picks the same source ids in every language; a language whose ids meet no
other language's (an unpaired file, see :mod:`parallel`) is sampled on its own. Files in
other layouts are read by :mod:`prompt_files`.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from . import parallel

__all__ = [
    "COLUMNS",
    "PAPER_TIERS",
    "SUBSETS",
    "TIERS",
    "PromptSet",
    "extra_tiers",
    "load",
    "load_builtin",
    "load_polyrefuse",
    "tier",
    "tier_of",
]

#: The paper's 23 languages in three resource tiers (Aziz, Hanif, Koto 2026).
TIERS: dict[str, str] = {
    **{lang: "high" for lang in "en de fr es it nl pl ru zh ja".split()},
    **{lang: "mid" for lang in "ar ko th el he hi fa".split()},
    **{lang: "low" for lang in "sw am my km si yo".split()},
}
PAPER_TIERS: Mapping[str, str] = MappingProxyType(dict(TIERS))  # read-only: what --tiers may not change
SUBSETS = ("harmful", "harmless")
COLUMNS = ["id", "text", "language", "subset", "split", "source_id"]
OPTIONAL_COLUMNS = ["origin"]  # kept by the loaders when present
_SPLITS = ("train", "val", "test")


def tier_of(language: str, tiers: Mapping[str, str] | None = None) -> str:
    """Resource tier of ``language`` (``"unlisted"`` if the table does not name it)."""
    return (tiers or TIERS).get(language, "unlisted")


def tier(name: str, tiers: Mapping[str, str] | None = None) -> list[str]:
    """Languages of one tier (``"high"``, ``"mid"``, ``"low"``), in table order."""
    table = tiers or TIERS
    if name not in set(table.values()):
        raise ValueError(f"unknown tier {name!r}; the table has {sorted(set(table.values()))}")
    return [lang for lang, t in table.items() if t == name]


@contextmanager
def extra_tiers(tiers: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Tiers for languages outside the paper's table while the block runs (the CLI's ``--tiers``).

    Every module reads :data:`TIERS` through :func:`tier_of`; this adds entries for the
    block and removes them afterwards, so a run never leaves the table changed. A
    language already in the table keeps its tier (naming another one is an error).
    """
    known = set(TIERS.values())
    for lang, name in tiers.items():
        if name not in known:
            raise ValueError(f"tier {name!r} for {lang!r} is not one of {sorted(known)}; write e.g. vi=mid")
        if PAPER_TIERS.get(lang, name) != name:
            raise ValueError(f"{lang!r} is {PAPER_TIERS[lang]!r} in the paper's table; --tiers sets languages "
                             "outside it")
    added = {lang: name for lang, name in tiers.items() if lang not in TIERS}
    TIERS.update(added)
    try:
        yield dict(TIERS)
    finally:
        for lang in added:
            TIERS.pop(lang, None)


def _as_list(value) -> list | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class PromptSet:
    """Prompts with their metadata; ``frame`` has the columns in :data:`COLUMNS`."""

    frame: pd.DataFrame
    origin: str = ""

    def __post_init__(self):
        missing = set(COLUMNS) - set(self.frame.columns)
        if missing:
            raise ValueError(f"PromptSet frame lacks columns {sorted(missing)}")
        bad = set(self.frame["subset"]) - set(SUBSETS)
        if bad:
            raise ValueError(f"unknown subset(s) {sorted(bad)}; use {SUBSETS}")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def texts(self) -> list[str]:
        return self.frame["text"].tolist()

    @property
    def languages(self) -> list[str]:
        """Languages in order of first appearance."""
        return list(dict.fromkeys(self.frame["language"]))

    @property
    def labels(self) -> np.ndarray:
        """1 for harmful, 0 for harmless."""
        return (self.frame["subset"] == "harmful").to_numpy(dtype=np.int64)

    def mask(self, **filters) -> np.ndarray:
        """Boolean row mask for column filters (a value or a list of values per column)."""
        keep = np.ones(len(self), dtype=bool)
        for column, value in filters.items():
            if value is None:
                continue
            if column not in self.frame.columns:
                raise ValueError(f"cannot filter on {column!r}; columns are {list(self.frame.columns)}")
            keep &= self.frame[column].isin(_as_list(value)).to_numpy()
        return keep

    def where(self, **filters) -> PromptSet:
        """Rows matching every filter, e.g. ``where(language=["sw", "yo"], subset="harmful")``."""
        rows = self.frame[self.mask(**filters)].reset_index(drop=True)
        return PromptSet(rows, self.origin)

    def require(self, **filters) -> PromptSet:
        """Like :meth:`where`, but an empty result is an error that says what exists."""
        out = self.where(**filters)
        if len(out) == 0:
            described = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None)
            raise ValueError(
                f"no prompts with {described} in {self.origin or 'this prompt set'}; "
                f"languages: {self.languages}, subsets: {sorted(set(self.frame['subset']))}, "
                f"splits: {sorted(set(self.frame['split']))}"
            )
        return out

    @classmethod
    def concat(cls, sets: Iterable[PromptSet]) -> PromptSet:
        sets = list(sets)
        frame = pd.concat([s.frame for s in sets], ignore_index=True)
        return cls(frame, " + ".join(dict.fromkeys(s.origin for s in sets)))


def _sample_sources(frame: pd.DataFrame, n_per_class: int | None, seed: int, origin: str) -> pd.DataFrame:
    """Keep the same ``n_per_class`` source ids per subset in every language (parallel prompts)."""
    if n_per_class is None:
        return frame
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for subset in SUBSETS:
        part = frame[frame["subset"] == subset]
        if part.empty:
            continue
        per_lang = part.groupby("language")["source_id"].apply(set)
        paired = _paired_languages(per_lang)
        common = sorted(set.intersection(*per_lang[paired]))
        if len(common) < n_per_class:
            raise ValueError(
                f"n_per_class={n_per_class} but only {len(common)} {subset} prompts are present in "
                f"every requested language of {origin}; ask for fewer"
            )
        keep += list(rng.choice(common, size=n_per_class, replace=False))
        for lang in [lang for lang in per_lang.index if lang not in paired]:  # unpaired: its own sample
            own = sorted(per_lang[lang])
            if len(own) < n_per_class:
                raise ValueError(f"n_per_class={n_per_class} but {lang!r} has only {len(own)} {subset} prompts "
                                 f"in {origin}; ask for fewer")
            keep += list(rng.choice(own, size=n_per_class, replace=False))
    order = {sid: i for i, sid in enumerate(keep)}
    out = frame[frame["source_id"].isin(order)].copy()
    out["_order"] = out["source_id"].map(order)
    return out.sort_values(["language", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _paired_languages(per_lang: pd.Series) -> list[str]:
    """Languages whose source ids meet another language's (or the first, if none do)."""
    counts = pd.Series([sid for ids in per_lang for sid in ids]).value_counts()
    shared = set(counts.index[counts > 1])
    paired = [lang for lang, ids in per_lang.items() if ids & shared]
    return paired or [per_lang.index[0]]


def _check_languages(requested, available: list[str], origin: str) -> list[str]:
    if requested is None:
        return available
    requested = _as_list(requested)
    unknown = [lang for lang in requested if lang not in available]
    if unknown:
        raise ValueError(f"language(s) {unknown} not in {origin}; available: {available}")
    if not requested:
        raise ValueError("languages is empty; name at least one language")
    return requested


def _finish(frame: pd.DataFrame, languages: list[str], n_per_class, seed, origin) -> PromptSet:
    frame = frame[frame["language"].isin(languages)]
    frame = frame[frame["text"].str.strip().astype(bool)]
    for lang in languages:
        for subset in SUBSETS:
            if not ((frame["language"] == lang) & (frame["subset"] == subset)).any():
                raise ValueError(f"language {lang!r} has no {subset} prompts in {origin}")
    frame = _sample_sources(frame, n_per_class, seed, origin)
    order = {lang: i for i, lang in enumerate(languages)}
    frame = frame.sort_values("language", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    return PromptSet(frame[COLUMNS + [c for c in OPTIONAL_COLUMNS if c in frame.columns]], origin)


def load_builtin(languages=None, *, n_per_class: int | None = None, seed: int = 0) -> PromptSet:
    """The demo set shipped with the package: 24 harmful + 24 harmless prompts in 8 languages.

    Written for this project (see ``resources/README.md``): demo data, not a benchmark.
    """
    frame = read_wide_resource("demo_prompts.tsv", split="demo", origin="built-in demo set")
    origin = "the built-in demo set"
    langs = _check_languages(languages, list(dict.fromkeys(frame["language"])), origin)
    return _finish(frame, langs, n_per_class, seed, origin)


def read_wide_resource(name: str, *, split: str, origin: str) -> pd.DataFrame:
    """A packaged TSV with one row per source prompt (``id``, ``subset``, one column per language) as long rows
    of :data:`COLUMNS` and ``origin``: the layout of the project's own prompt files."""
    path = resources.files("lowres_safety") / "resources" / name
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    languages = [c for c in rows[0] if c not in ("id", "subset")]
    return pd.DataFrame([{"id": f"{r['id']}-{lang}", "text": r[lang], "language": lang, "subset": r["subset"],
                          "split": split, "source_id": r["id"], "origin": origin}
                         for r in rows for lang in languages])


def _polyrefuse_files(root: Path, split: str) -> dict[tuple[str, str], Path]:
    """(language, subset) -> file, for the upstream Multilingual-Refusal layout."""
    files = {}
    for path in sorted((root / "PolyRefuse").glob(f"*_{split}_translated_*.json")):
        subset, _, _, lang = path.stem.split("_", 3)
        if subset in SUBSETS:
            files[(lang, subset)] = path
    if split != "test":  # English train/val live in dataset/splits
        splits = root / "dataset" / "splits"
        for subset, name in (("harmful", f"harmful_{split}.json"), ("harmless", f"harmless_{split}_200_sampled.json")):
            if (splits / name).exists():
                files[("en", subset)] = splits / name
    return files


def load_polyrefuse(
    root: str | Path,
    languages=None,
    *,
    split: str = "train",
    n_per_class: int | None = None,
    seed: int = 0,
) -> PromptSet:
    """PolyRefuse (Wang et al. 2025) from a folder in the upstream layout.

    Non-English test files carry the translation in ``instruction_translated``; English
    train/val come from ``dataset/splits``. Translations share the index of their English
    original, which becomes ``source_id``, unless :func:`parallel.check` finds a file out
    of the English file's row order: its rows then get their own source ids (unpaired),
    with a warning. ``n_per_class`` samples the same source ids in every paired language,
    seeded.
    """
    root = Path(root)
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; PolyRefuse has {_SPLITS}")
    if not (root / "PolyRefuse").is_dir():
        raise FileNotFoundError(
            f"no PolyRefuse data at {root}: expected the upstream Multilingual-Refusal layout "
            "(PolyRefuse/ and dataset/splits/); in this project it lies at ../shared/data/Multilingual-Refusal"
        )
    files = _polyrefuse_files(root, split)
    origin = f"split {split!r} of {root}"
    available = sorted({lang for lang, _ in files}, key=lambda l: (l != "en", l))
    langs = _check_languages(languages, available, origin)
    if languages is None:  # all languages: only those with both subsets (upstream lacks zh harmless test)
        langs = [lang for lang in langs if all((lang, subset) in files for subset in SUBSETS)]
    records = []
    for (lang, subset), path in files.items():
        if lang not in langs and lang != "en":  # English is read for the row-order check
            continue
        for i, row in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            text = row.get("instruction_translated") or row["instruction"]
            sid = f"{subset}-{split}-{i:04d}"
            records.append({"id": f"{sid}-{lang}", "text": text, "language": lang, "subset": subset,
                            "split": split, "source_id": sid, "origin": f"PolyRefuse {split}"})
    frame = pd.DataFrame(records, columns=COLUMNS + ["origin"])
    checks = parallel.check(frame, "en")
    checks = checks[checks["language"].isin(langs)]
    if not checks["parallel"].all():
        warnings.warn(f"{root}: {parallel.describe(checks)}; those prompts are marked unpaired (their own "
                      "source ids), so no paired analysis matches them with another language's prompt",
                      stacklevel=2)
        frame = parallel.unpair(frame, checks)
        frame.loc[frame["source_id"] == frame["id"], "origin"] += " (unpaired)"
    return _finish(frame, langs, n_per_class, seed, origin)


def load(data: str | Path = "builtin", languages=None, *, split: str = "train",
         n_per_class: int | None = None, seed: int = 0) -> PromptSet:
    """``"builtin"`` for the demo set, or a PolyRefuse folder (files: ``prompt_files.open_prompts``)."""
    if str(data) == "builtin":
        return load_builtin(languages, n_per_class=n_per_class, seed=seed)
    return load_polyrefuse(data, languages, split=split, n_per_class=n_per_class, seed=seed)
