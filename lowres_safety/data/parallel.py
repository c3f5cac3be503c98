"""Are two languages' prompt files really translations of each other, row by row?

Paired analyses (the loophole rate, attribution's language comparison, held-out folds
that keep translations together) trust that prompts sharing a ``source_id`` are
translations of one original. Multilingual sets often give that id only by row position
in one file per language, and a file in another order silently pairs unrelated prompts
(this PolyRefuse copy's Chinese harmless train and val files are such files: see the
README). Three signals need no translation model and survive any script:

- ``length_rho``: Spearman correlation of the character lengths of paired rows. Long
  prompts stay long in translation (every parallel PolyRefuse file: 0.70–0.97); a
  shuffled file gives about 0.
- ``numbers``: of the pairs whose reference text has numbers, the share whose numbers
  all appear in the other text too (parallel: 0.84–1.0).
- ``names``: of the pairs whose non-Latin-script text keeps Latin-script words (names,
  acronyms: "GPT", "VR"), the share whose words all appear in the reference (parallel:
  0.88–1.0).

A signal counts once it has ``min_rows`` rows; a language × subset × split whose counted
signals include one below its threshold is marked unpaired (:func:`unpair`): better
an analysis without pairs than one with wrong pairs.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["THRESHOLDS", "check", "describe", "signals", "unpair"]

#: Below these a signal says "not parallel" (parallel PolyRefuse files: ≥ 0.70, ≥ 0.84, ≥ 0.88).
THRESHOLDS = {"length_rho": 0.3, "numbers": 0.5, "names": 0.5}
_NUMBER = re.compile(r"\d+")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]+")
_LETTER = re.compile(r"[^\W\d_]")


def _numbers(text: str) -> frozenset[int]:
    return frozenset(int(n) for n in _NUMBER.findall(text))  # int() reads any script's digits


def _latin_words(text: str) -> list[str]:
    """Latin-script words of a mostly non-Latin text (in a Latin-script text every word is one)."""
    letters = _LETTER.findall(text)
    latin = sum(ch.isascii() for ch in letters)
    return _LATIN_WORD.findall(text) if letters and latin < len(letters) / 2 else []


def signals(reference: list[str], other: list[str], *, min_rows: int = 8) -> dict:
    """The three signals for row-paired texts (NaN where fewer than ``min_rows`` rows count)."""
    if len(reference) != len(other):
        raise ValueError(f"signals need paired rows; got {len(reference)} and {len(other)} texts")
    out = {"n_pairs": len(reference)}
    if len(reference) >= min_rows:
        lengths = pd.DataFrame({"a": [len(t) for t in reference], "b": [len(t) for t in other]})
        out["length_rho"] = float(lengths["a"].corr(lengths["b"], method="spearman"))
    else:
        out["length_rho"] = np.nan
    kept = [_numbers(a) <= _numbers(b) for a, b in zip(reference, other) if _numbers(a)]
    out["numbers"] = float(np.mean(kept)) if len(kept) >= min_rows else np.nan
    named = [all(w.lower() in a.lower() for w in words)
             for a, b in zip(reference, other) if (words := _latin_words(b))]
    out["names"] = float(np.mean(named)) if len(named) >= min_rows else np.nan
    out["rows_numbers"], out["rows_names"] = len(kept), len(named)
    return out


def check(frame: pd.DataFrame, reference: str | None = None, *, min_rows: int = 8) -> pd.DataFrame:
    """One row per language × subset × split of ``frame`` (PromptSet columns) against ``reference``.

    ``reference`` defaults to ``"en"`` if present, else the first language. Rows are paired
    by ``source_id``. Columns: ``language, subset, split, reference``, the signals, and
    ``parallel`` (False when a counted signal is below :data:`THRESHOLDS`).
    """
    languages = list(dict.fromkeys(frame["language"]))
    reference = reference or ("en" if "en" in languages else languages[0] if languages else None)
    rows = []
    for (subset, split), part in frame.groupby(["subset", "split"], sort=False):
        ref = part[part["language"] == reference].drop_duplicates("source_id").set_index("source_id")["text"]
        for lang, own in part[part["language"] != reference].groupby("language", sort=False):
            pairs = own.drop_duplicates("source_id").set_index("source_id")["text"].to_frame("other").join(
                ref.rename("ref"), how="inner")
            found = signals(pairs["ref"].astype(str).tolist(), pairs["other"].astype(str).tolist(),
                            min_rows=min_rows)
            bad = [name for name, floor in THRESHOLDS.items() if found[name] < floor]  # NaN never counts
            rows.append({"language": lang, "subset": subset, "split": split, "reference": reference, **found,
                         "parallel": not bad})
    columns = ["language", "subset", "split", "reference", "n_pairs", *THRESHOLDS, "rows_numbers", "rows_names",
               "parallel"]
    return pd.DataFrame(rows, columns=columns)


def unpair(frame: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every row of a non-parallel language × subset × split given its own source id.

    The new id is the row's ``id``, so it is shared with no other language and no paired
    analysis can meet it; nothing else changes.
    """
    bad = checks.loc[~checks["parallel"], ["language", "subset", "split"]]
    if bad.empty:
        return frame
    hit = frame[["language", "subset", "split"]].merge(bad.assign(_hit=True), how="left")["_hit"].eq(True)
    out = frame.copy()
    out.loc[hit.to_numpy(), "source_id"] = out.loc[hit.to_numpy(), "id"]
    return out


def describe(checks: pd.DataFrame) -> str:
    """One sentence per non-parallel file, for warnings and reports ("" when all are parallel)."""
    parts = []
    for row in checks[~checks["parallel"]].itertuples():
        found = ", ".join(f"{name} {getattr(row, name):.2f}" for name in THRESHOLDS
                          if not np.isnan(getattr(row, name)))
        parts.append(f"{row.language} {row.subset} {row.split} is not in {row.reference}'s row order "
                     f"({found}; parallel files are above {', '.join(f'{v:g}' for v in THRESHOLDS.values())})")
    return "; ".join(parts)
