"""Utility: four-option multiple-choice accuracy, scored the way the paper scores Global-MMLU.

Steering must not cost the model its knowledge, so every ``steer`` row carries the
accuracy on multiple-choice questions in that row's language next to Δ and KL.

**What is scored, and why this way.** The paper's released code
(github rashadaziz/low-resource-safety, ``scripts/routing_refusal/evaluate_global_mmlu_utility.py``:
``global_mmlu_instruction``, ``answer_token_ids``, ``choice_scores_from_logits``, with the
answer variants and ``variant_reduce: max`` of ``configs/routing_refusal/evaluate_global_mmlu_utility.yaml``)
puts the question and its options, *in the file's own language*, into the user turn of
the chat template with no instruction, only the cue ``Answer:`` on the last line::

    {question}\\n\\nA. {option_a}\\nB. {option_b}\\nC. {option_c}\\nD. {option_d}\\n\\nAnswer:

and reads the logits of the first response token. A letter's score is the maximum
logit over the spellings "A", " A", "A.", " A." that the tokenizer writes as a single
token (if none is, the last token of "A"); the prediction is the letter with the
highest score. :func:`mc_prompt` and :func:`answer_token_ids` do the same; ``cue=``
swaps the one English word for a translation (per language) when a study wants none.

**Data.** :func:`load_mc` reads a local file or folder in Global-MMLU's layout
(``question, option_a, option_b, option_c, option_d, answer``, optional ``subject``,
``subject_category`` and ``sample_id``; the language is a column or, as in Global-MMLU's per-language files, the
file's or folder's name). :func:`load_mc_demo` is the built-in set: 24 general-knowledge
questions written for this project, the same 24 in each of the 8 built-in languages
(``resources/mc_multilingual.tsv``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from .generation import as_prompt_set, next_token_logprobs
from .hooks import Hook

__all__ = ["ANSWER_VARIANTS", "CUE", "LETTERS", "MC_COLUMNS", "answer_token_ids", "choice_scores", "load_mc",
           "load_mc_demo", "margin_and_entropy", "mc_accuracy", "mc_prompt", "mc_scores", "mc_summary"]

LETTERS = ("A", "B", "C", "D")
#: Spellings of an answer letter whose logits are maxed over (the released config's ``answer_label_variants``).
ANSWER_VARIANTS = ("{letter}", " {letter}", "{letter}.", " {letter}.")
#: The last line of the released prompt, in every language.
CUE = "Answer:"
MC_COLUMNS = ("question", "option_a", "option_b", "option_c", "option_d", "answer")
_LANGUAGE_NAME = re.compile(r"[a-z]{2,3}([_-][A-Za-z0-9]+)?")
_SPLIT_NAMES = ("dev", "test", "train", "val", "validation")


# ---------------------------------------------------------------- data


def _read_table(path: Path) -> pd.DataFrame:
    """One file as strings; the reader is chosen by the file's suffix."""
    readers = {
        ".tsv": lambda p: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False),
        ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
        ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
        ".json": lambda p: pd.read_json(p, dtype=False),
        ".parquet": pd.read_parquet,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"cannot read {path}: multiple-choice files must end in {sorted(readers)}")
    try:
        return reader(path)
    except ImportError as err:
        raise ImportError(f"reading {path} needs a parquet engine: pip install pyarrow ({err})") from err


def _normalised(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    missing = [c for c in MC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"multiple-choice items from {origin} lack columns {missing}; Global-MMLU's layout has "
                         f"{list(MC_COLUMNS)} (column names are case-sensitive)")
    out = frame.copy()
    for column in MC_COLUMNS:
        out[column] = out[column].fillna("").astype(str)
    out["answer"] = out["answer"].str.strip().str.upper()
    bad = np.flatnonzero(~out["answer"].isin(LETTERS))
    if len(bad):
        raise ValueError(f"answer must be a letter A-D in {origin}; item {bad[0]} (from 0) has "
                         f"{frame['answer'].iloc[bad[0]]!r}")
    for column in ("subject", "subject_category"):  # Global-MMLU's own columns, kept where present
        if column not in out:
            out[column] = ""
    if "sample_id" not in out:
        out["sample_id"] = [f"{origin}#{i}" for i in range(len(out))]
    return out


def _language_from_name(path: Path, root: Path) -> str | None:
    """``ar`` from ``ar.csv`` or ``ar/test-00000-of-00001.parquet`` (Global-MMLU's layout): the stem, then the folders."""
    folders = path.parent.relative_to(root).parts if path != root else ()
    names = (path.stem, *reversed(folders), *((root.name,) if root.is_dir() else ()))
    return next((n for n in names if _LANGUAGE_NAME.fullmatch(n) and n not in _SPLIT_NAMES), None)


def load_mc(path: str | Path, language: str | None = None, *, split: str | None = "test") -> pd.DataFrame:
    """Multiple-choice items from a local file or folder in Global-MMLU's layout.

    Each row's language is its ``language`` column, else ``language``, else the name of
    the file (``sw.csv``) or of its folder (``sw/test-00000-of-00001.parquet``, the layout
    of a Global-MMLU download). In a folder, files whose names start with another split
    than ``split`` (``dev-...``) are skipped; ``split=None`` keeps every file.
    Columns: sample_id, language, subject, subject_category, question, option_a..option_d, answer (a letter).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no multiple-choice file or folder at {root}")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and
                                                  p.suffix.lower() in {".tsv", ".csv", ".jsonl", ".json", ".parquet"})
    if split is not None and root.is_dir():
        files = [p for p in files if p.name.startswith(split) or not p.name.startswith(_SPLIT_NAMES)]
    if not files:
        raise ValueError(f"{root} holds no .tsv, .csv, .jsonl, .json or .parquet file of split {split!r}")
    parts = []
    for file in files:
        frame = _normalised(_read_table(file), str(file))
        if "language" not in frame or language is not None:
            lang = language or _language_from_name(file, root)
            if lang is None:
                raise ValueError(f"{file} has no 'language' column and its name does not say the language; "
                                 f"add the column, name the file after the language (sw.csv), or pass language=")
            frame["language"] = lang
        parts.append(frame)
    out = pd.concat(parts, ignore_index=True)
    return out[["sample_id", "language", "subject", "subject_category", *MC_COLUMNS]]


def load_mc_demo(languages: Sequence[str] | str | None = None) -> pd.DataFrame:
    """The built-in set: 24 questions in each of en de fr zh ar hi sw yo (see resources/README.md)."""
    with resources.as_file(resources.files("lowres_safety") / "resources" / "mc_multilingual.tsv") as path:
        items = load_mc(path)
    if languages is None:
        return items
    wanted = [languages] if isinstance(languages, str) else list(languages)
    unknown = sorted(set(wanted) - set(items["language"]))
    if unknown:
        raise ValueError(f"the built-in multiple-choice set has no {unknown}; it has "
                         f"{sorted(set(items['language']))}. Pass your own file to load_mc")
    return items[items["language"].isin(wanted)].reset_index(drop=True)


# ---------------------------------------------------------------- scoring


def mc_prompt(row: Mapping[str, str], cue: str | Mapping[str, str] = CUE) -> str:
    """The user turn for one item: question, the four options, a blank line and the cue.

    ``cue`` is one string for every language (the released code's ``Answer:``) or a
    mapping language → cue (languages it does not name keep ``Answer:``).
    """
    line = cue if isinstance(cue, str) else cue.get(row.get("language", ""), CUE)
    options = "\n".join(f"{letter}. {row['option_' + letter.lower()]}" for letter in LETTERS)
    return f"{row['question']}\n\n{options}\n\n{line}"


def answer_token_ids(tokenizer, variants: Sequence[str] = ANSWER_VARIANTS) -> dict[str, tuple[int, ...]]:
    """Per letter, the ids of its spellings that are one token (fallback: the last token of the bare letter)."""
    out = {}
    for letter in LETTERS:
        ids = []
        for variant in variants:
            encoded = tokenizer.encode(variant.format(letter=letter), add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(int(encoded[0]))
        out[letter] = tuple(ids) or (int(tokenizer.encode(letter, add_special_tokens=False)[-1]),)
    if len({i for ids in out.values() for i in ids}) < sum(len(ids) for ids in out.values()):
        raise ValueError(f"two answer letters share a token ({out}); this tokenizer cannot score letters apart")
    return out


def choice_scores(logits: Float[Tensor, "item vocab"], ids: Mapping[str, Sequence[int]]) -> Float[Tensor, "item 4"]:
    """Each letter's score: the maximum over its spellings' logits (or log-probabilities: same argmax)."""
    return torch.stack([logits[:, list(ids[letter])].max(-1).values for letter in LETTERS], -1)


def mc_scores(model, items: pd.DataFrame, hooks: Sequence[Hook] = (), *, batch_size: int = 16,
              cue: str | Mapping[str, str] = CUE) -> pd.DataFrame:
    """One row per item: its letter scores (first-token log-probabilities), prediction and correctness.

    ``hooks`` are applied to the forward pass, so an intervention's cost in knowledge is
    measured on the same prompts with and without it.
    """
    items = _normalised(items, "the items given")
    if len(items) == 0:
        raise ValueError("no multiple-choice items to score")
    prompts = as_prompt_set([mc_prompt(row, cue) for row in items.to_dict("records")])
    logp = next_token_logprobs(model, prompts, hooks, batch_size=batch_size)
    scores = choice_scores(logp, answer_token_ids(model.tokenizer)).numpy()
    out = items.reset_index(drop=True).copy()
    for j, letter in enumerate(LETTERS):
        out[f"score_{letter}"] = scores[:, j]
    out["prediction"] = np.array(LETTERS)[scores.argmax(-1)]
    out["correct"] = out["prediction"] == out["answer"]
    out["margin"], out["entropy"] = margin_and_entropy(scores, out["answer"].map(LETTERS.index).to_numpy())
    return out


def margin_and_entropy(scores: np.ndarray, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the right letter's score minus the best wrong one's, and the entropy (nats) of the softmax over
    the four letter scores (``score_margin``, ``score_entropy`` of the released utility script).

    Log-probabilities and logits give the same two numbers: both differ by one constant per item.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(scores))
    wrong = scores.copy()
    wrong[rows, answer] = -np.inf
    margin = scores[rows, answer] - wrong.max(1)
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return margin, -(p * np.log(np.clip(p, 1e-12, None))).sum(1)


def mc_summary(scores: pd.DataFrame, fired: np.ndarray | None = None) -> pd.DataFrame:
    """Accuracy (%), mean margin, mean entropy and, given the gate's calls, its fire rate (%) on the items: one
    ``ALL`` row, then one per subject category (``summarize_rows``, ``subject_category_summaries``)."""
    frame = scores.assign(fired=np.nan if fired is None else 100.0 * np.asarray(fired, dtype=float))
    groups = [("ALL", frame)] + sorted(((c, g) for c, g in frame.groupby("subject_category") if c),
                                       key=lambda pair: pair[0])
    return pd.DataFrame([{"subject_category": name, "n": len(g), "accuracy": 100.0 * g["correct"].mean(),
                          "mean_margin": g["margin"].mean(), "mean_entropy": g["entropy"].mean(),
                          "gate_fire_rate": g["fired"].mean()} for name, g in groups])


def mc_accuracy(model, items: pd.DataFrame, hooks: Sequence[Hook] = (), *, batch_size: int = 16,
                cue: str | Mapping[str, str] = CUE) -> float:
    """Accuracy (%) on four-option items, scored as :func:`mc_scores` does (the paper's Global-MMLU scoring)."""
    return float(mc_scores(model, items, hooks, batch_size=batch_size, cue=cue)["correct"].mean() * 100)
