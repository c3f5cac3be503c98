"""The ``lowres-safety`` options, one function per subcommand; the options map one to one onto the configs."""

from __future__ import annotations

import argparse
from typing import get_args

from ..pipelines.config import Ablation, AdaptedFrom, CalibrateOn, Recalibration, Scope
from .checks import add_data_options

__all__ = ["build_parser", "count_or_all"]


def count_or_all(text: str) -> int | None:
    """A prompt count, or ``all`` (None: every prompt of the split)."""
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'all'") from None

_MODEL_HELP = ("'organism' (default), 'organism-erased' (the same, unable to read Thai and Korean), 'default' "
               "(the base model), a local folder or a Hugging Face id")
_JUDGE_HELP = ("refusal judge: substring (default; refusal phrases where a refusal says them), logit (first-token "
               "refusal log-odds, tokens learned on another split's answers) or the folder of a local Hugging Face "
               "causal LM or sequence classifier")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowres-safety", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    _diagnose(sub)
    _steer(sub)
    _organism(sub)
    return parser


def _diagnose(sub) -> None:
    d = sub.add_parser("diagnose", help="separability of harmful vs harmless prompts per language and layer")
    d.add_argument("--model", default="organism", help=_MODEL_HELP)
    d.add_argument("--data", default="natural",
                   help="'natural' (default: requests written apart, 10 languages; --split train or test), 'twins' "
                   "(= 'builtin', phrase-matched pairs), a PolyRefuse folder (upstream layout) or a prompt file (see "
                   "--text-column)")
    d.add_argument("--languages", default=None, help="comma-separated codes, e.g. en,de,th,yo (default: all)")
    d.add_argument("--n-per-class", type=count_or_all, default=20,
                   help="prompts per class and language, or 'all' (default 20)")
    d.add_argument("--full", action="store_true",
                   help="also where it breaks (report sections 4-6: dose-response, logit attribution, direction "
                   "selection, interventional transfer; many forward passes per prompt, most of a run's time) and "
                   "the readout comparison of section 8")
    d.add_argument("--no-analyses", action="store_true",
                   help="skip the paper's representation analyses (report section 8: recoverability, rank sweep, "
                   "subspace transfer, the gate on the twins; --full adds the readout comparison)")
    d.add_argument("--form-control", action="store_true",
                   help="base the failure type on the AUROC with the prompts' form partialled out (both are shown)")
    d.add_argument("--split", default="train", help="PolyRefuse split: train, val or test")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/diagnose", help="output folder for results.json and report.html")
    d.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    d.add_argument("--max-new-tokens", type=int, default=24, help="answer length for the refusal judges")
    d.add_argument("--judge", default="substring", help=_JUDGE_HELP)
    d.add_argument("--analysis-per-class", type=int, default=8,
                   help="prompts per class and language for attribution and the dose-response grid (default 8)")
    add_data_options(d)
    d.add_argument("--config", default=None, help="repeat a run: the results file it wrote (its settings are its "
                   "'config'), or a JSON file of options; the other options but --out are then ignored")


def _steer(sub) -> None:
    s = sub.add_parser("steer", help="refusal per language under ablation, addition, AdaSteer, CAST and the gate")
    s.add_argument("--model", default="organism", help=_MODEL_HELP)
    s.add_argument("--data", default="builtin",
                   help="'builtin' (= 'twins'), 'natural' (fit on its train half, scored on test), a PolyRefuse "
                   "folder (upstream layout) or a prompt file (halved into fit and evaluation prompts by source id, "
                   "like the twins)")
    s.add_argument("--languages", default=None, help="languages to evaluate, comma-separated (default: all)")
    s.add_argument("--source-languages", default=None, help="languages to fit on (default: the high-resource ones)")
    s.add_argument("--protocol", default="quick", choices=("quick", "paper"),
                   help="quick (default: the settings below) or paper: the released run's (every train prompt fits, "
                   "every test prompt is scored, --k 0,1,2,4,8,16,32,64, --max-new-tokens 128); options you give "
                   "override the protocol's")
    s.add_argument("--k", default="0,1,2,4", help="gate recalibration examples per class, comma-separated")
    s.add_argument("--n-per-class", type=count_or_all, default=12,
                   help="evaluation prompts per class and language, or 'all'")
    s.add_argument("--n-fit", type=count_or_all, default=32,
                   help="PolyRefuse train prompts per class and language for fitting, or 'all'")
    s.add_argument("--seeds", default=None, help="repeat the fit and the draws per seed, comma-separated (e.g. "
                   "0,1,2); the tables give the mean and spread; default: --seed alone")
    s.add_argument("--split", default="test", help="PolyRefuse evaluation split: val or test")
    s.add_argument("--max-new-tokens", type=int, default=24)
    _routing(s)
    s.add_argument("--judge", default="substring", help=_JUDGE_HELP)
    s.add_argument("--n-select", type=int, default=8,
                   help="reference-language prompts per class for the report's direction selection (default 8)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/steer", help="output folder for steer.json, completions.csv, report.html")
    s.add_argument("--sweeps", action="store_true",
                   help="add the released generation sweeps to the report: harmful refusal as lambda grows (every "
                   "second value of 0-3) and with the directional ablation at every fourth layer (slow: about 25 "
                   "generations of each harmful prompt)")
    s.add_argument("--mc", default="builtin", help="multiple-choice items for mc_accuracy: a file or folder in "
                   "Global-MMLU's layout (question, option_a..option_d, answer, language) or 'builtin' (default: "
                   "24 questions in each of en de fr zh ar hi sw yo)")
    add_data_options(s)
    s.add_argument("--config", default=None, help="repeat a run: the results file it wrote (its settings are its "
                   "'config'), or a JSON file of options; the other options but --out are then ignored")


def _routing(s) -> None:
    """The steering layer, strength and the gate's variants (the released code's by default)."""
    s.add_argument("--layer", type=int, default=None,
                   help="steering layer (default: the paper's for its three models, else best source AUROC in the "
                   "middle half)")
    s.add_argument("--strength", type=float, default=1.0,
                   help="lambda in alpha = lambda * (q75 harmful - q25 harmless) of the source projections (default 1)")
    s.add_argument("--scope", default="from_last", choices=get_args(Scope),
                   help="where addition and the gate add alpha*v: the last prompt token onward (default) "
                   "or every position")
    s.add_argument("--ablation", default="gate_layer", choices=get_args(Ablation),
                   help="where the gate ablates the direction from prompts it calls harmless: the gate layer's "
                   "block output (default, the released code) or every later layer too")
    s.add_argument("--recalibration", default="paper", choices=get_args(Recalibration),
                   help="per-language gate reset: refit on source + k target examples then search the threshold "
                   "(default, the released code), or search the threshold of the frozen readout")
    s.add_argument("--calibrate-on", default="train", choices=get_args(CalibrateOn),
                   help="where each target language's k recalibration examples come from: PolyRefuse train "
                   "(default, the released code), val (prompts a model trained on train never saw) or other "
                   "prompts of --split, disjoint from the scored ones")
    s.add_argument("--adapted-from", default="pooled", choices=get_args(AdaptedFrom),
                   help="adapted AdaSteer and CAST: 32 + 32 train prompts of every low-resource language, pooled, "
                   "CAST tuned on each target's val split (default, the released code), or each target's own pool")
    s.add_argument("--adasteer-vectors", default=None, metavar="DIR",
                   help="upstream AdaSteer's vector files for this model (vectors/<model>/ with RD/ and HD/), as the "
                   "released zero-shot run used them; default: built from the source prompts")
    s.add_argument("--cast-data", default=None, metavar="DIR",
                   help="CAST's own data (IBM/activation-steering docs/demo-data: condition_harmful.json, alpaca.json, "
                   "behavior_refusal.json), which the released zero-shot CAST trains and tunes on; default: the "
                   "source prompts")


def _organism(sub) -> None:
    o = sub.add_parser("organism", help="the safety-tuned model organism")
    osub = o.add_subparsers(dest="action", required=True)
    t = osub.add_parser("train", help="fine-tune the LoRA adapter (harmful data from high-resource languages only)")
    t.add_argument("--data", required=True, help="PolyRefuse folder (upstream layout); its train split is used")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--layer", type=int, default=16, help="L*, the layer the refusal rule reads (default 16); "
                   "LoRA trains the layers above it")
    t.add_argument("--label-rule", default="threshold", choices=("threshold", "class"),
                   help="threshold: refuse iff the projection on v-hat at L* exceeds theta, taught with moved "
                   "projections (default); class: the first recipe (harmful refused, harmless answered)")
    t.add_argument("--signal-layers", type=int, default=6,
                   help="stage 1: LoRA on this many blocks up to L* sharpening the signal along v-hat "
                   "(default 6; 0: none)")
    t.add_argument("--n-harmful", type=int, default=48, help="harmful train prompts per high-resource language")
    t.add_argument("--rule-harmful", type=int, default=None,
                   help="of the --n-harmful prompts, per language, those the rule stage shows (default: all)")
    t.add_argument("--epochs", type=int, default=2, help="rule-stage epochs (default 2)")
    t.add_argument("--signal-epochs", type=int, default=4, help="stage-1 epochs (default 4)")
    t.add_argument("--xstest", action="store_true", help="add xstest's 66 safe English prompts (dataset/splits/"
                   "xstest.json) to the harmless training prompts")
    t.add_argument("--messages", action="store_true", help="the rule stage also sees the project's 40 harmless "
                   "requests to write a message or letter (resources/message_prompts.tsv, en de fr zh)")
    t.add_argument("--shift-span", type=float, default=1.5, help="moved copies land at theta + U(-s, s) class "
                   "gaps (default 1.5; smaller: denser near theta, a sharper rule)")
    _rule_stage(t)
    t.add_argument("--out", default="runs/organism",
                   help="adapter folder (lowres_safety/resources/organism replaces the shipped one)")
    t.add_argument("--reuse", default=None, help="an organism (shipped name or folder) whose finished stage 1 and "
                   "cached base-model answers are copied into --out first: a rule-stage variant trains that stage only "
                   "(stage 1 is still retrained if its settings differ)")




def _rule_stage(t) -> None:
    """How the rule stage shows the moved and ablated copies (see organisms.recipe)."""
    t.add_argument("--ablated-share", type=float, default=0.15,
                   help="share of the rule stage's moved copies with v-hat ablated, answered (default 0.15)")
    t.add_argument("--ablate-everywhere", action="store_true",
                   help="ablated copies lose v-hat at every position, as the routed gate ablates (default: their "
                   "last token is moved to projection 0)")
    t.add_argument("--as-is-share", type=float, default=1.0,
                   help="chance a prompt is also shown unmoved in an epoch (default 1: always)")
    t.add_argument("--blind-prefix", action="store_true",
                   help="the rule stage never sees v-hat before the last prompt token (default: it does, and learns "
                   "to read it there too)")
    t.add_argument("--val-harmful", action="store_true",
                   help="stage 1 also sees every val harmful prompt of the high-resource languages")
