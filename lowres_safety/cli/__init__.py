"""The ``lowres-safety`` command: parse the options, build the run's config, call the library. Nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..pipelines import DiagnoseConfig, SteerConfig, diagnose, steer
from . import checks
from .parser import build_parser

__all__ = ["diagnose_config", "given_options", "main", "steer_config"]


def _languages(text: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def _parser():
    return build_parser(__doc__)


def diagnose_config(args, checked: checks.Checked) -> DiagnoseConfig:
    """The :class:`DiagnoseConfig` the ``diagnose`` options describe (or ``--config`` names)."""
    if args.config:
        return DiagnoseConfig.load(args.config)
    return DiagnoseConfig(model=args.model, data=args.data, languages=_languages(args.languages),
                          n_per_class=args.n_per_class, split=args.split, seed=args.seed, cache=not args.no_cache,
                          max_new_tokens=args.max_new_tokens, analysis_per_class=args.analysis_per_class,
                          judge=args.judge, form_control=args.form_control, full=args.full,
                          analyses=not args.no_analyses, files=checked.files,
                          tiers=checked.tiers)


def steer_config(args, checked: checks.Checked, given: set[str] | None = None) -> SteerConfig:
    """The :class:`SteerConfig` the ``steer`` options describe (or ``--config`` names).

    With ``--protocol paper`` the options named on the command line (``given``, their
    dests; None: all) override :meth:`SteerConfig.paper`'s settings, the others keep the protocol's.
    """
    if args.config:
        return SteerConfig.load(args.config)
    options = {"model": "model", "data": "data", "languages": "languages", "source_languages": "source_languages",
               "ks": "k", "n_per_class": "n_per_class", "n_fit": "n_fit", "split": "split", "seeds": "seeds",
               "max_new_tokens": "max_new_tokens", "seed": "seed", "layer": "layer", "strength": "strength",
               "scope": "scope", "ablation": "ablation", "recalibration": "recalibration",
               "calibrate_on": "calibrate_on", "adapted_from": "adapted_from", "adasteer_vectors": "adasteer_vectors",
               "cast_data": "cast_data",
               "n_select": "n_select", "mc": "mc", "judge": "judge", "sweeps": "sweeps"}
    values = {field: getattr(args, dest) for field, dest in options.items()}
    values.update(languages=_languages(args.languages), source_languages=_languages(args.source_languages),
                  ks=checks.parse_ints("--k", args.k),
                  seeds=checks.parse_ints("--seeds", args.seeds) if args.seeds else None)
    if args.protocol == "paper":
        named = {field: v for field, v in values.items() if given is None or options[field] in given}
        return SteerConfig.paper(**named, files=checked.files, tiers=checked.tiers)
    return SteerConfig(**values, files=checked.files, tiers=checked.tiers)


def given_options(argv: list[str]) -> set[str]:
    """The dests of the options ``argv`` names itself (defaults left out): what overrides a protocol."""
    parser = _parser()
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                stack += list(action.choices.values())
    return set(vars(parser.parse_args(argv)))


def _organism(args) -> dict:
    """``organism train``; the summary of what was written."""
    from ..organisms import recipe, signal
    from ..shipped import organism_folder

    if args.reuse:
        copied = signal.reuse(organism_folder(args.reuse), args.out)
        print(f"reused from {args.reuse}: {', '.join(copied) or 'nothing (already in --out)'}", flush=True)
    return recipe.train(args.data, args.out, _recipe(args))


def _recipe(args):
    """The organism recipe ``organism train``'s options describe."""
    from ..organisms.recipe import RecipeConfig

    return RecipeConfig(seed=args.seed, layer=args.layer, label_rule=args.label_rule, epochs=args.epochs,
                        signal_layers=args.signal_layers, n_harmful=args.n_harmful, signal_epochs=args.signal_epochs,
                        xstest=args.xstest, messages=args.messages, shift_span=args.shift_span,
                        ablated_share=args.ablated_share, rule_harmful=args.rule_harmful,
                        ablate_everywhere=args.ablate_everywhere, as_is_share=args.as_is_share,
                        val_harmful=args.val_harmful, blind_prefix=args.blind_prefix)


def _run(args, given: set[str] | None = None) -> str:
    """Run the subcommand; what it wrote, in one line. ``given``: the options the command line names."""
    checked = checks.check(args)  # what the flags alone say, before any data or model loads
    if args.command == "diagnose":
        diagnose(diagnose_config(args, checked)).save(args.out)
        return f"wrote {Path(args.out) / 'results.json'}, report.html and completions.csv"
    if args.command == "steer":
        steer(steer_config(args, checked, given), workdir=args.out).save(args.out)
        return f"wrote {Path(args.out) / 'steer.json'}, completions.csv and report.html"
    summary = _organism(args)
    return (f"wrote the adapter to {args.out} in {summary['seconds'] / 60:.1f} min "
            f"(loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        print(_run(args, given_options(argv)))
    except (ValueError, FileNotFoundError) as err:
        print(f"lowres-safety: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
