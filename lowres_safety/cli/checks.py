"""Every ``lowres-safety`` option checked before any model loads.

A bad number (``--max-new-tokens 0``, ``--analysis-per-class -3``) used to start a run of
minutes and fail late or not at all; here each option is checked against a rule read
from a table, so a new option needs one line, and the error names the option, the value
and what would work. The data options (``--data FILE`` with its column names,
``--harmless-from``, ``--tiers``) are also added and read here.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..data import PAPER_TIERS, SUBSETS, TIERS
from ..data.prompt_files import HARMFUL_VALUES, HARMLESS_VALUES, READERS, FileOptions, is_prompt_file

__all__ = ["AT_LEAST", "Checked", "add_data_options", "check", "parse_tiers"]

#: Integer option -> smallest allowed value, and why (options a subcommand lacks are skipped).
AT_LEAST = {
    "n_per_class": (2, "held-out projections need 2 prompts per class"),
    "analysis_per_class": (2, "direction selection scores on one and fits on another"),
    "max_new_tokens": (1, "the refusal judges read at least one answer token"),
    "n_fit": (1, "the methods fit on at least one prompt per class"),
    "n_select": (1, "selection scores at least one prompt per class"),
    "n_harmful": (1, "the organism needs harmful prompts"),
    "n_erased": (2, "the erasure needs prompts of both classes"),
    "epochs": (1, "training needs at least one epoch"),
    "signal_layers": (0, "0 turns the signal stage off"),
    "layer": (0, "layers count from 0"),
    "seed": (0, "numpy seeds are non-negative"),
}
_EMBEDDED_LAYERS = 30  # SmolLM2-135M-Instruct: the default model, and the organism's base
_SPLITS = {"diagnose": ("train", "val", "test"), "steer": ("val", "test")}
_FILE_OPTIONS = {"text_column": "--text-column", "language_column": "--language-column",
                 "label_column": "--label-column", "source_id_column": "--source-id-column",
                 "harmful_values": "--harmful-values", "harmless_values": "--harmless-values",
                 "harmless_from": "--harmless-from"}
_FILE_DEFAULTS = {"harmful_values": ",".join(HARMFUL_VALUES), "harmless_values": ",".join(HARMLESS_VALUES)}


@dataclass(frozen=True)
class Checked:
    """What the checks parsed: tiers for languages outside the table, and how to read a prompt file."""

    tiers: dict[str, str] = field(default_factory=dict)
    files: FileOptions | None = None


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The options that read ``--data FILE`` and set tiers (diagnose and steer)."""
    g = parser.add_argument_group("your own prompt file (--data FILE.csv/.tsv/.json/.jsonl/.parquet)")
    g.add_argument("--text-column", default=None, help="column with the prompt text (one row per prompt); for a "
                   "wide file (one column per language) leave it out and name the columns with --languages")
    g.add_argument("--language-column", default=None, help="column with the language code (with --text-column)")
    g.add_argument("--label-column", default=None,
                   help="column saying harmful or harmless; without it the file is harmful-only (see --harmless-from)")
    g.add_argument("--source-id-column", default=None,
                   help="column tying the translations of one prompt together (wide files: default the row)")
    g.add_argument("--harmful-values", default=_FILE_DEFAULTS["harmful_values"], help="label values meaning harmful")
    g.add_argument("--harmless-values", default=_FILE_DEFAULTS["harmless_values"],
                   help="label values meaning harmless")
    g.add_argument("--harmless-from", default=None, help="harmless prompts for languages the file has none in: a "
                   "PolyRefuse folder (its --split) or another file read with the same column options")
    parser.add_argument("--tiers", default=None,
                        help="tiers of languages outside the paper's 23, e.g. vi=mid,bn=low,jv=low")


def parse_tiers(text: str | None) -> dict[str, str]:
    """``"vi=mid,bn=low"`` -> ``{"vi": "mid", "bn": "low"}``, every item checked."""
    out: dict[str, str] = {}
    known = sorted(set(TIERS.values()))
    for item in (text or "").split(","):
        lang, sep, name = (part.strip() for part in item.partition("="))
        if not sep or not lang or name not in known:
            raise ValueError(f"--tiers item {item.strip()!r} is not language=tier with tier one of {known}; "
                             "write e.g. --tiers vi=mid,bn=low")
        if lang in out:
            raise ValueError(f"--tiers names {lang!r} twice")
        if PAPER_TIERS.get(lang, name) != name:
            raise ValueError(f"--tiers: {lang!r} is {PAPER_TIERS[lang]!r} in the paper's table; --tiers sets "
                             "languages outside it")
        out[lang] = name
    return out


def _codes(option: str, text: str | None) -> None:
    if text is None:
        return
    items = [t.strip() for t in text.split(",")]
    if not any(items) or "" in items:
        raise ValueError(f"{option} {text!r} has an empty item; give comma-separated codes like en,de,sw")
    dup = sorted({t for t in items if items.count(t) > 1})
    if dup:
        raise ValueError(f"{option} names {dup} more than once")


def _ints(option: str, text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"{option} {text!r} is not comma-separated integers, e.g. 0,1,2,4") from None
    return values


def _n_layers(model: str) -> int | None:
    """Layer count of ``model`` without loading it, where a config says so cheaply."""
    if model in ("default", "organism"):
        return _EMBEDDED_LAYERS
    config = Path(model) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    return None


def _is_polyrefuse(path: str) -> bool:
    return (Path(path) / "PolyRefuse").is_dir()


def _check_data(args) -> FileOptions | None:
    data = str(args.data)
    file_flags = [flag for dest, flag in _FILE_OPTIONS.items()
                  if getattr(args, dest, None) not in (None, _FILE_DEFAULTS.get(dest))]
    if data != "builtin" and not Path(data).exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder; give 'builtin', a PolyRefuse folder or a "
                                f"prompt file ({', '.join(sorted(READERS))})")
    if data == "builtin" or Path(data).is_dir():
        if data != "builtin" and not _is_polyrefuse(data):
            raise ValueError(f"--data {data} is a folder without PolyRefuse/ in it: give the Multilingual-Refusal "
                             "folder (upstream layout) or a prompt file")
        if file_flags:
            raise ValueError(f"{', '.join(file_flags)} read a prompt file, but --data is {data!r}; give --data FILE")
        split = getattr(args, "split", None)
        allowed = _SPLITS.get(args.command)
        if data != "builtin" and allowed and split not in allowed:
            raise ValueError(f"--split {split!r}: {args.command} on PolyRefuse takes {' or '.join(allowed)}")
        return None
    if not is_prompt_file(data):
        raise ValueError(f"--data {data}: prompt files must end in one of {sorted(READERS)}")
    if args.text_column is None and args.languages is None:
        raise ValueError(f"--data {data}: name the text column (--text-column, with --language-column), or for a "
                         "wide file with one column per language, those columns (--languages en,sw,...)")
    if args.text_column is not None and args.language_column is None:
        raise ValueError("--text-column needs --language-column (the column with each prompt's language code)")
    values = {}
    for subset, dest in zip(SUBSETS, ("harmful_values", "harmless_values")):
        _codes(_FILE_OPTIONS[dest], getattr(args, dest))
        values[subset] = tuple(t.strip() for t in getattr(args, dest).split(","))
    both = sorted(set(values["harmful"]) & set(values["harmless"]))
    if both:
        raise ValueError(f"{both} are both harmful and harmless values; each label value means one class")
    source = args.harmless_from
    if source is not None:
        if not Path(source).exists():
            raise FileNotFoundError(f"--harmless-from {source}: no such file or folder")
        if Path(source).is_dir() and not _is_polyrefuse(source):
            raise ValueError(f"--harmless-from {source} is a folder without PolyRefuse/ in it")
        if Path(source).is_dir() and args.split not in _SPLITS["diagnose"]:
            raise ValueError(f"--split {args.split!r}: PolyRefuse has train, val and test")
        if not Path(source).is_dir() and not is_prompt_file(source):
            raise ValueError(f"--harmless-from {source}: prompt files must end in one of {sorted(READERS)}")
    return FileOptions(text=args.text_column, language=args.language_column, label=args.label_column,
                       source_id=args.source_id_column, harmful_values=values["harmful"],
                       harmless_values=values["harmless"], harmless_from=source)


def check(args: argparse.Namespace) -> Checked:
    """Check every option of the parsed subcommand; raise ValueError naming the first bad one."""
    for dest, (low, why) in AT_LEAST.items():
        value = getattr(args, dest, None)
        if value is not None and value < low:
            raise ValueError(f"--{dest.replace('_', '-')} {value}: must be at least {low} ({why})")
    for dest in ("languages", "source_languages", "erase"):
        _codes(f"--{dest.replace('_', '-')}", getattr(args, dest, None))
    strength = getattr(args, "strength", None)
    if strength is not None and not (math.isfinite(strength) and strength > 0):
        raise ValueError(f"--strength {strength}: strength must be positive and finite (lambda in alpha = lambda "
                         "* spread)")
    model = getattr(args, "model", "default")
    layer = getattr(args, "layer", None)
    n_layers = _n_layers(model if args.command != "organism" else "default")
    if layer is not None and n_layers is not None:
        top = n_layers - 2 if args.command == "organism" else n_layers - 1  # the organism trains layers above
        if layer > top:
            raise ValueError(f"--layer {layer}: this model has layers 0..{n_layers - 1}; use at most {top}")
    if Path(args.out).is_file():
        raise ValueError(f"--out {args.out} is a file; give a folder for the results")
    if args.command == "organism" and args.action == "erase":
        blocks = _ints("--blocks", args.blocks)
        if len(blocks) != 2 or not 1 <= blocks[0] <= blocks[1]:
            raise ValueError(f"--blocks {args.blocks}: give first,last with 1 <= first <= last (at or below the "
                             "organism's L*)")
        if not _is_polyrefuse(args.data):
            raise ValueError(f"--data {args.data}: the erasure trains on a PolyRefuse folder (upstream layout)")
        return Checked()
    if args.command == "organism":
        if args.signal_layers > args.layer:
            raise ValueError(f"--signal-layers {args.signal_layers} reaches below block 1 from --layer {args.layer}; "
                             f"use at most {args.layer}")
        if args.erase and not args.signal_layers:
            raise ValueError("--erase needs --signal-layers > 0: the erasure is learned by the signal stage")
        if not _is_polyrefuse(args.data):
            raise ValueError(f"--data {args.data}: the organism trains on a PolyRefuse folder (upstream layout)")
        return Checked()
    if args.command == "steer":
        ks = _ints("--k", args.k)
        if not ks or any(k < 0 for k in ks) or any(k > args.n_fit for k in ks):
            raise ValueError(f"--k {args.k}: each k must be 0 (the source threshold) up to --n-fit {args.n_fit} "
                             "(the gate recalibrates on k of the n-fit calibration prompts per class)")
    return Checked(parse_tiers(args.tiers) if args.tiers else {}, _check_data(args))
