"""Any prompt set as a :class:`~lowres_safety.data.PromptSet`: CSV, TSV, JSON, JSON Lines, Parquet or a DataFrame.

Public multilingual safety sets ship in two shapes, and both are read here with the
caller's column names:

- long: one row per prompt, a text column and a language column
  (``load_prompts(path, text="prompt", language="lang", label="label")``);
- wide: one row per source prompt, one column per language
  (``load_prompts(path, languages=["en", "sw", "yo"])``), so the translations of a row
  share a source id.

Many of them are harmful-only (a few hundred jailbreak prompts in ten languages, no
harmless side). ``harmless_from=`` pairs such a set with harmless prompts of another set
(a PolyRefuse folder, another file or a PromptSet) per language, and every row keeps its
``origin`` so the report can say where each class came from. A language with no harmless
counterpart is an error that names it: the analyses compare the two classes within each
language. Every problem with a file is reported before any model is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from . import parallel
from .loaders import is_builtin, load_builtin, load_polyrefuse, polyrefuse_files
from .prompts import COLUMNS, PromptSet, check_languages, finish, sample_sources

__all__ = ["HARMFUL_VALUES", "HARMLESS_VALUES", "READERS", "FileOptions", "describe_origins", "is_prompt_file",
           "load_prompts", "open_prompts", "origin_table", "read_table"]

#: File suffix -> pandas reader. CSV/TSV cells are read as text, so ids like "007" survive.
READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": partial(pd.read_csv, dtype=str, keep_default_na=False),
    ".tsv": partial(pd.read_csv, sep="\t", dtype=str, keep_default_na=False),
    ".json": partial(pd.read_json, dtype=False),
    ".jsonl": partial(pd.read_json, lines=True, dtype=False),
    ".parquet": pd.read_parquet,
}
#: Label values read as harmful / harmless (compared lower-cased; 1.0 reads as "1").
HARMFUL_VALUES = ("harmful", "unsafe", "1", "true", "yes")
HARMLESS_VALUES = ("harmless", "safe", "benign", "0", "false", "no")
_OPTION = {"text": "text= (--text-column)", "language": "language= (--language-column)",
           "label": "label= (--label-column)", "source_id": "source_id=", "split": "split=",
           "languages": "languages= (--languages)", "category": "category="}


def is_prompt_file(data) -> bool:
    """Whether ``data`` names a file this module reads (by suffix), as opposed to builtin or a folder."""
    return isinstance(data, (str, Path)) and Path(data).suffix.lower() in READERS and not Path(data).is_dir()


def read_table(data: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(table, name) of a file or a DataFrame; unknown suffixes and unreadable files are clear errors."""
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True), "the given DataFrame"
    path = Path(data)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"cannot read {path}: prompt files must end in one of {sorted(READERS)} "
                         "(or give 'builtin' or a PolyRefuse folder)")
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file at {path}")
    try:
        table = reader(path)
    except ImportError as err:
        raise ValueError(f"reading {path.name} needs an extra package: {err}; install it (pip install pyarrow)") \
            from err
    except ValueError as err:
        hint = " (a file with one JSON object per line should end in .jsonl)" if path.suffix == ".json" else ""
        raise ValueError(f"could not read {path} as {path.suffix[1:].upper()}: {err}{hint}") from err
    return table.reset_index(drop=True), path.name


def _require_columns(table: pd.DataFrame, name: str, **given) -> None:
    for option, column in given.items():
        columns = [column] if isinstance(column, str) else list(column or [])
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{name} has no column {missing[0]!r} (named by {_OPTION[option]}); its columns are "
                             f"{[str(c) for c in table.columns]}")


def _texts(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def _label_key(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and float(value).is_integer():
        return str(int(value))
    return str(value).strip().lower()


def _subsets(labels: pd.Series, harmful_values, harmless_values, name: str, column: str) -> pd.Series:
    table = {**{_label_key(v): "harmless" for v in harmless_values},
             **{_label_key(v): "harmful" for v in harmful_values}}
    keys = labels.map(_label_key)
    unknown = sorted(set(keys[~keys.isin(table)]))
    if unknown:
        raise ValueError(f"label column {column!r} of {name} has unknown value(s) {unknown[:10]}; harmful is "
                         f"{list(harmful_values)}, harmless is {list(harmless_values)} (pass harmful_values= / "
                         "harmless_values=, or --harmful-values / --harmless-values)")
    return keys.map(table)


def _no_empty(frame: pd.DataFrame, name: str, where: str) -> None:
    empty = frame.index[frame["text"].str.strip() == ""]
    if len(empty):
        rows = frame.loc[empty, "_row"].tolist()
        raise ValueError(f"{name} has empty text in {where} at row(s) {rows[:10]} (counting data rows from 0); "
                         "fill them or drop those rows")


def _rows(table: pd.DataFrame, name: str, *, text, language, languages, label, source_id, split,
          harmful_values, harmless_values, default_subset: str, category=None) -> pd.DataFrame:
    """PromptSet rows (plus ``_row``, the file row) of a long or wide table, validated."""
    _require_columns(table, name, label=label, source_id=source_id, split=split, category=category)
    base = pd.DataFrame({"_row": np.arange(len(table))})
    base["subset"] = (_subsets(table[label], harmful_values, harmless_values, name, label) if label
                      else default_subset)
    base["sid"] = _texts(table[source_id]).str.strip() if source_id else [f"row{i}" for i in range(len(table))]
    base["split"] = _texts(table[split]).str.strip() if split else "all"
    if category:
        base["category"] = _texts(table[category]).str.strip()
    if text is not None:  # long: one row per prompt
        if language is None:
            raise ValueError(f"{name}: a long file needs its language column too ({_OPTION['language']}); for a "
                             f"wide file (one column per language) give {_OPTION['languages']} instead of text=")
        _require_columns(table, name, text=text, language=language)
        frame = base.assign(text=_texts(table[text]), language=_texts(table[language]).str.strip())
        _no_empty(frame, name, f"column {text!r}")
        if (frame["language"] == "").any():
            raise ValueError(f"{name} has an empty language in column {language!r} at row(s) "
                             f"{frame.loc[frame['language'] == '', '_row'].tolist()[:10]}")
    else:  # wide: one column per language, one row per source prompt
        if not languages:
            raise ValueError(f"{name}: name the text column ({_OPTION['text']}, with {_OPTION['language']}), or "
                             f"for a wide file with one column per language, those columns ({_OPTION['languages']})")
        columns = dict(languages) if isinstance(languages, Mapping) else {c: c for c in languages}
        _require_columns(table, name, languages=list(columns))
        parts = []
        for column, code in columns.items():
            part = base.assign(text=_texts(table[column]), language=code)
            _no_empty(part, name, f"language column {column!r}")
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True)
    dup = frame[frame.duplicated(["subset", "sid", "language"], keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        raise ValueError(f"{name} has duplicate id {first['sid']!r} for language {first['language']!r} "
                         f"({first['subset']}) at rows {dup.loc[dup['sid'] == first['sid'], '_row'].tolist()[:10]}: "
                         f"each {source_id or 'row'} may appear once per language and class")
    frame["source_id"] = name + ":" + frame["subset"] + ":" + frame["sid"]
    frame["id"] = frame["source_id"] + ":" + frame["language"]
    frame["origin"] = name
    return frame.drop(columns="sid")


def _harmless_rows(harmless_from, needed: list[str], n: int, seed: int, *, polyrefuse_split: str,
                   **read) -> pd.DataFrame:
    """Harmless rows for ``needed`` languages from another set, ``n`` per language where it has them."""
    offered = None
    if isinstance(harmless_from, PromptSet):
        other = harmless_from
    elif isinstance(harmless_from, (str, Path)) and Path(harmless_from).is_dir():
        files = polyrefuse_files(Path(harmless_from), polyrefuse_split)
        ask = [lang for lang in needed if (lang, "harmless") in files]  # read only what is needed
        other = (load_polyrefuse(harmless_from, ask, split=polyrefuse_split) if ask else
                 PromptSet(pd.DataFrame(columns=COLUMNS), f"split {polyrefuse_split!r} of {harmless_from}"))
        offered = sorted({lang for lang, subset in files if subset == "harmless"})
    else:
        table, name = read_table(harmless_from)
        label = read["label"] if read["label"] in table.columns else None  # no label column: all harmless
        other = PromptSet(_rows(table, name, **{**read, "label": label, "category": None}, default_subset="harmless")
                          .drop(columns="_row"), name)
    frame = other.frame[(other.frame["subset"] == "harmless") & other.frame["language"].isin(needed)]
    offered = offered or sorted(set(other.frame.loc[other.frame["subset"] == "harmless", "language"]))
    missing = [lang for lang in needed if lang not in set(frame["language"])]
    if missing:
        raise ValueError(f"language(s) {missing} have harmful prompts but no harmless ones, and {other.origin} has "
                         f"no harmless prompts in them either (it has {offered}); drop them with "
                         f"{_OPTION['languages']} or give harmless prompts in them")
    have = int(frame.groupby("language").size().min())
    frame = sample_sources(frame, min(n, have), seed, other.origin)
    if "origin" not in frame.columns:
        frame = frame.assign(origin=other.origin)
    return frame


def load_prompts(data: str | Path | pd.DataFrame, *, text: str | None = None, language: str | None = None,
                 languages=None, label: str | None = None, source_id: str | None = None, split: str | None = None,
                 harmful_values=HARMFUL_VALUES, harmless_values=HARMLESS_VALUES, harmless_from=None,
                 harmless_split: str = "train", n_per_class: int | None = None, seed: int = 0,
                 category: str | None = None) -> PromptSet:
    """A prompt file or DataFrame as a PromptSet, with the caller's column names.

    Long tables need ``text`` and ``language``; ``languages`` then keeps some languages.
    Wide tables leave ``text`` out and name their language columns in ``languages`` (a list,
    or a mapping column -> language code); each row's translations share a source id.
    ``label`` holds ``harmful_values`` / ``harmless_values``; without it every row is
    harmful and ``harmless_from`` (a PolyRefuse folder, whose ``harmless_split`` is used,
    a file read with the same column names, or a PromptSet) supplies the harmless prompts
    of every language that has none, as many per language as the most harmful prompts any
    language has (or all it has). ``source_id`` names the column tying translations of one
    prompt together (a wide table's default: the row); in a long table without it no row
    is paired with another. Paired rows are checked with :func:`parallel.check`, and a
    language × class whose rows are not translations of the reference's is unpaired
    (``origin`` ends in "(unpaired)"), with a warning. ``split`` names a
    column kept as metadata, as is ``category`` (e.g. a harm category, for per-category
    scores such as :func:`lowres_safety.analyses.ood_transfer`'s). Rows keep their file (or
    set) in ``origin``.
    """
    table, name = read_table(data)
    read = dict(text=text, language=language, languages=languages, label=label, source_id=source_id, split=split,
                harmful_values=tuple(harmful_values), harmless_values=tuple(harmless_values), category=category)
    frame = _rows(table, name, **read, default_subset="harmful").drop(columns="_row")
    available = list(dict.fromkeys(frame["language"]))
    langs = check_languages(languages if text is not None else None, available, name)
    frame = frame[frame["language"].isin(langs)]
    if text is None or source_id:  # rows are paired: check that they are translations
        checks = parallel.check(frame)
        if not checks["parallel"].all():
            warnings.warn(f"{name}: {parallel.describe(checks)}; those prompts are marked unpaired", stacklevel=2)
            frame = parallel.unpair(frame, checks)
            frame.loc[frame["source_id"] == frame["id"], "origin"] += " (unpaired)"
    needed = [lang for lang in langs if not ((frame["language"] == lang) & (frame["subset"] == "harmless")).any()]
    if needed and harmless_from is None:
        pair = "harmless_from= (--harmless-from: a PolyRefuse folder or another file)"
        if label is None:
            raise ValueError(f"{name} has no label column, so it is a harmful-only set: pair it with harmless prompts "
                             f"via {pair}, or name its label column with {_OPTION['label']}")
        raise ValueError(f"{name} has no harmless prompts in {needed}: give them with {pair}, or drop those "
                         f"languages with {_OPTION['languages']}")
    origin = name
    if needed:
        n = int(frame[frame["subset"] == "harmful"].groupby("language").size().max())
        extra = _harmless_rows(harmless_from, needed, n_per_class or n, seed, polyrefuse_split=harmless_split, **read)
        frame = pd.concat([frame, extra[COLUMNS + ["origin"]]], ignore_index=True)
        origin = f"{name} + harmless prompts from {' + '.join(dict.fromkeys(extra['origin']))}"
    return finish(frame, langs, n_per_class, seed, origin)


@dataclass(frozen=True)
class FileOptions:
    """How the CLI reads ``--data FILE`` (its ``--text-column`` etc.); the fields are :func:`load_prompts`'s."""

    text: str | None = None
    language: str | None = None
    label: str | None = None
    source_id: str | None = None
    harmful_values: tuple[str, ...] = HARMFUL_VALUES
    harmless_values: tuple[str, ...] = HARMLESS_VALUES
    harmless_from: str | None = None

    def flags(self) -> str:
        """The command-line flags that give these options (for a report's "regenerate with" line)."""
        names = {"text": "--text-column", "language": "--language-column", "label": "--label-column",
                 "source_id": "--source-id-column", "harmful_values": "--harmful-values",
                 "harmless_values": "--harmless-values", "harmless_from": "--harmless-from"}
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out.append(f"{names[f.name]} {','.join(value) if isinstance(value, tuple) else value}")
        return " ".join(out)


def open_prompts(data, languages=None, *, split: str = "train", n_per_class: int | None = None, seed: int = 0,
                 files: FileOptions | None = None) -> PromptSet:
    """What ``--data`` names: a built-in set (``twins``, ``natural``; ``builtin`` = twins), a PolyRefuse folder
    (its ``split``) or a prompt file."""
    if is_builtin(data):
        return load_builtin(languages, n_per_class=n_per_class, seed=seed, name=str(data), split=split)
    if not is_prompt_file(data):
        return load_polyrefuse(data, languages, split=split, n_per_class=n_per_class, seed=seed)
    files = files or FileOptions()
    return load_prompts(data, text=files.text, language=files.language, languages=languages, label=files.label,
                        source_id=files.source_id, harmful_values=files.harmful_values,
                        harmless_values=files.harmless_values, harmless_from=files.harmless_from,
                        harmless_split=split, n_per_class=n_per_class, seed=seed)


def origin_table(prompts: PromptSet) -> pd.DataFrame:
    """Where each class's prompts came from: ``origin, subset, languages, n`` (one row per origin × class)."""
    frame = prompts.frame if "origin" in prompts.frame.columns else prompts.frame.assign(origin=prompts.origin)
    rows = [{"origin": origin, "subset": subset, "languages": ", ".join(dict.fromkeys(part["language"])),
             "n": len(part)}
            for (origin, subset), part in frame.groupby(["origin", "subset"], sort=False)]
    return pd.DataFrame(rows, columns=["origin", "subset", "languages", "n"])


def describe_origins(prompts: PromptSet) -> str:
    """One line for a report: "harmful from x.csv (en, sw: 12); harmless from PolyRefuse train (en, sw: 12)"."""
    return "; ".join(f"{row.subset} from {row.origin} ({row.languages}: {row.n})"
                     for row in origin_table(prompts).itertuples())
