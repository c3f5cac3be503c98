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

__all__ = ["BUILTIN_SETS", "SPLITS", "is_builtin", "is_polyrefuse", "load", "load_builtin", "load_polyrefuse",
           "polyrefuse_files", "read_wide_resource"]

SPLITS = ("train", "val", "test")


#: The project's own prompt sets by the name ``--data`` takes (resources/README.md): ``twins`` are
#: phrase-matched pairs, the form-controlled check (``builtin`` is their first name); ``natural``
#: are harmful and ordinary requests written independently, as a model meets them, with train and
#: test halves.
BUILTIN_SETS = {"builtin": "demo_prompts.tsv", "twins": "demo_prompts.tsv", "natural": "natural_prompts.tsv"}
_ORIGINS = {"demo_prompts.tsv": "the built-in twins", "natural_prompts.tsv": "the built-in natural set"}


def is_builtin(data) -> bool:
    """Whether ``data`` names one of the project's own sets (:data:`BUILTIN_SETS`)."""
    return str(data) in BUILTIN_SETS


def load_builtin(languages=None, *, n_per_class: int | None = None, seed: int = 0, name: str = "twins",
                 split: str | None = None) -> PromptSet:
    """One of the project's own prompt sets (:data:`BUILTIN_SETS`); by default the twins.

    ``twins``: 24 harmful + 24 harmless phrase-matched prompts in 12 languages. ``natural``:
    40 + 40 independently written requests in 10 languages, each row in the ``train`` or
    ``test`` half (``split``; None or any other value: both). Written for this project (see
    ``resources/README.md``): checks with a known design, not a benchmark.
    """
    if name not in BUILTIN_SETS:
        raise ValueError(f"no built-in set {name!r}; there are {sorted(BUILTIN_SETS)}")
    file = BUILTIN_SETS[name]
    frame = read_wide_resource(file, split="demo", origin=_ORIGINS[file])
    if split in ("train", "test") and (frame["split"] != "demo").any():
        frame = frame[frame["split"] == split]
    origin = _ORIGINS[file] + (f" ({split})" if split in ("train", "test") and name == "natural" else "")
    langs = check_languages(languages, list(dict.fromkeys(frame["language"])), origin)
    return finish(frame, langs, n_per_class, seed, origin)


def read_wide_resource(name: str, *, split: str, origin: str) -> pd.DataFrame:
    """A packaged TSV with one row per source prompt (``id``, ``subset``, optionally ``split`` and ``category``,
    one column per language) as long rows of :data:`COLUMNS` and ``origin``: the layout of the project's own
    prompt files. A ``split`` column gives each row's split; else every row gets ``split``."""
    path = resources.files("lowres_safety") / "resources" / name
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    languages = [c for c in rows[0] if c not in ("id", "subset", "split", "category")]
    return pd.DataFrame([{"id": f"{r['id']}-{lang}", "text": r[lang], "language": lang, "subset": r["subset"],
                          "split": r.get("split", split), "source_id": r["id"], "origin": origin}
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
    """A built-in set's name (:data:`BUILTIN_SETS`), or a PolyRefuse folder (files: ``prompt_files.open_prompts``)."""
    if is_builtin(data):
        return load_builtin(languages, n_per_class=n_per_class, seed=seed, name=str(data), split=split)
    return load_polyrefuse(data, languages, split=split, n_per_class=n_per_class, seed=seed)
