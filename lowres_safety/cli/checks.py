"""Every ``lowres-safety`` option checked before any model loads.

A bad number (``--max-new-tokens 0``, ``--analysis-per-class -3``) used to start a run of
minutes and fail late or not at all; here each option is checked against a rule read
from a table, so a new option needs one line, and the error names the option, the value
and what would work. The data options (``--data FILE`` with its column names,
``--harmless-from``, ``--tiers``) are also added and read here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from ..data import SUBSETS, TIERS, check_tiers, is_polyrefuse
from ..data.prompt_files import HARMFUL_VALUES, HARMLESS_VALUES, FileOptions, is_prompt_file
from ..pipelines.config import AT_LEAST, check_codes, model_depth

__all__ = ["Checked", "add_data_options", "check", "parse_ints", "parse_tiers"]

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
        out[lang] = name
    check_tiers(out)
    return out


def _codes(option: str, text: str | None) -> None:
    if text is None:
        return
    items = [t.strip() for t in text.split(",")]
    if not any(items) or "" in items:
        raise ValueError(f"{option} {text!r} has an empty item; give comma-separated codes like en,de,sw")
    check_codes(option, items)


def parse_ints(option: str, text: str) -> tuple[int, ...]:
    """``"0,1,2,4"`` -> ``(0, 1, 2, 4)``; anything else is an error naming ``option``."""
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"{option} {text!r} is not comma-separated integers, e.g. 0,1,2,4") from None


def _file_options(args) -> FileOptions | None:
    """The prompt-file options as :class:`FileOptions`; None (and no file flag given) unless ``--data`` is a file.

    Whether the data and these options fit together is the config's check
    (:class:`~lowres_safety.pipelines.config.RunConfig`); here only what the flags alone say.
    """
    data = str(args.data)
    file_flags = [flag for dest, flag in _FILE_OPTIONS.items()
                  if getattr(args, dest, None) not in (None, _FILE_DEFAULTS.get(dest))]
    if not is_prompt_file(data):
        if file_flags:
            raise ValueError(f"{', '.join(file_flags)} read a prompt file, but --data is {data!r}; give --data FILE")
        return None
    values = {}
    for subset, dest in zip(SUBSETS, ("harmful_values", "harmless_values")):
        _codes(_FILE_OPTIONS[dest], getattr(args, dest))
        values[subset] = tuple(t.strip() for t in getattr(args, dest).split(","))
    return FileOptions(text=args.text_column, language=args.language_column, label=args.label_column,
                       source_id=args.source_id_column, harmful_values=values["harmful"],
                       harmless_values=values["harmless"], harmless_from=args.harmless_from)


def check(args: argparse.Namespace) -> Checked:
    """Check what the flags alone say (numbers, lists, the organism's options); raise ValueError naming the first
    bad one. The run's config checks the rest (:mod:`lowres_safety.pipelines.config`)."""
    for dest, (low, why) in AT_LEAST.items():
        value = getattr(args, dest, None)
        if value is not None and value < low:
            raise ValueError(f"--{dest.replace('_', '-')} {value}: must be at least {low} ({why})")
    for dest in ("languages", "source_languages"):
        _codes(f"--{dest.replace('_', '-')}", getattr(args, dest, None))
    if Path(args.out).is_file():
        raise ValueError(f"--out {args.out} is a file; give a folder for the results")
    if args.command == "organism":
        _check_organism(args)
        return Checked()
    if args.command == "steer":
        parse_ints("--k", args.k)
    if args.config is not None and not Path(args.config).is_file():
        raise FileNotFoundError(f"--config {args.config}: no such file; give the results file of a run")
    return Checked(parse_tiers(args.tiers) if args.tiers else {}, _file_options(args))


def _check_organism(args) -> None:
    layer, top = args.layer, model_depth("default") - 2  # the organism trains the layers above L*
    if layer > top:
        raise ValueError(f"--layer {layer}: this model has layers 0..{top + 1}; use at most {top}")
    if args.signal_layers > args.layer:
        raise ValueError(f"--signal-layers {args.signal_layers} reaches below block 1 from --layer {args.layer}; "
                         f"use at most {args.layer}")
    if not is_polyrefuse(args.data):
        raise ValueError(f"--data {args.data}: the organism trains on a PolyRefuse folder (upstream layout)")
