"""Loaders: PolyRefuse in its upstream layout and the project's built-in prompt sets.

Files in other layouts (long or wide CSV/TSV/JSON) are read by :mod:`~lowres_safety.data.prompt_files`.
"""

from __future__ import annotations

import csv
import json
import warnings
from importlib import resources
from pathlib import Path

import pandas as pd

from . import parallel
from .prompts import COLUMNS, SUBSETS, PromptSet, check_languages, finish

__all__ = ["SPLITS", "is_polyrefuse", "load", "load_builtin", "load_polyrefuse", "polyrefuse_files",
           "read_wide_resource"]

SPLITS = ("train", "val", "test")


def load_builtin(languages=None, *, n_per_class: int | None = None, seed: int = 0) -> PromptSet:
    """The demo set shipped with the package: 24 harmful + 24 harmless prompts in 8 languages.

    Written for this project (see ``resources/README.md``): demo data, not a benchmark.
    """
    frame = read_wide_resource("demo_prompts.tsv", split="demo", origin="built-in demo set")
    origin = "the built-in demo set"
    langs = check_languages(languages, list(dict.fromkeys(frame["language"])), origin)
    return finish(frame, langs, n_per_class, seed, origin)


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


def is_polyrefuse(path: str | Path) -> bool:
    """Whether ``path`` is a folder in PolyRefuse's upstream layout (it holds ``PolyRefuse/``)."""
    return (Path(path) / "PolyRefuse").is_dir()


def polyrefuse_files(root: Path, split: str) -> dict[tuple[str, str], Path]:
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
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; PolyRefuse has {SPLITS}")
    if not is_polyrefuse(root):
        raise FileNotFoundError(
            f"no PolyRefuse data at {root}: expected the upstream Multilingual-Refusal layout "
            "(PolyRefuse/ and dataset/splits/); in this project it lies at ../shared/data/Multilingual-Refusal"
        )
    files = polyrefuse_files(root, split)
    origin = f"split {split!r} of {root}"
    available = sorted({lang for lang, _ in files}, key=lambda l: (l != "en", l))
    langs = check_languages(languages, available, origin)
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
    return finish(frame, langs, n_per_class, seed, origin)


def load(data: str | Path = "builtin", languages=None, *, split: str = "train",
         n_per_class: int | None = None, seed: int = 0) -> PromptSet:
    """``"builtin"`` for the demo set, or a PolyRefuse folder (files: ``prompt_files.open_prompts``)."""
    if str(data) == "builtin":
        return load_builtin(languages, n_per_class=n_per_class, seed=seed)
    return load_polyrefuse(data, languages, split=split, n_per_class=n_per_class, seed=seed)
