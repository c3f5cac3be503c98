"""Typed run configurations: every option of ``diagnose`` and ``steer``, declared once and checked once.

A config is a frozen dataclass. Building one checks every field (numbers against
:data:`AT_LEAST`, string options against their ``Literal``, the data against what is on
disk, a layer against the model's depth where its config says it cheaply), so a bad
option fails before any model loads. :meth:`~RunConfig.to_dict` is saved into every
results file and :meth:`~RunConfig.from_dict` reads it back: a run is repeated from its
own results (``lowres-safety steer --config results/steer.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from ..data.loaders import is_builtin, is_polyrefuse
from ..data.prompt_files import READERS, FileOptions, is_prompt_file
from ..data.tiers import check_tiers
from ..methods.upstream import CAST_FILES

__all__ = ["AT_LEAST", "PAPER", "Ablation", "CalibrateOn", "DiagnoseConfig", "Recalibration", "RunConfig", "Scope",
           "SteerConfig", "check_choice", "check_codes", "model_depth"]

#: Where addition and the gate add α·v̂: the last prompt token onward, or every position.
Scope = Literal["from_last", "all"]
#: Where the gate ablates: the gate layer's block output (released code), or every later layer too.
Ablation = Literal["gate_layer", "all_later_layers"]
#: Per-language gate reset: refit on source + k target examples then search the threshold (released code),
#: or search the threshold of the frozen readout.
Recalibration = Literal["paper", "threshold"]
#: Where a target language's k calibration examples come from (see :class:`SteerConfig`).
CalibrateOn = Literal["train", "val", "split"]
AdaptedFrom = Literal["pooled", "target"]

#: The released run's settings (``configs/intervention/conditional_vhrl.yaml``, ``configs/generation/greedy.yaml``)
#: where they differ from ``steer``'s quick defaults: every train prompt of the source languages fits the
#: direction, gate and α; every test prompt is scored; budgets up to 64 (the released ``budget``); 128 new
#: tokens. ``SteerConfig.paper()`` starts from these; the rest of the defaults already are the released ones.
PAPER = {"n_fit": None, "n_per_class": None, "ks": (0, 1, 2, 4, 8, 16, 32, 64), "max_new_tokens": 128,
         "split": "test"}

#: Integer option -> smallest allowed value, and why.
AT_LEAST = {
    "n_per_class": (2, "held-out projections need 2 prompts per class"),
    "analysis_per_class": (2, "direction selection scores on one and fits on another"),
    "max_new_tokens": (1, "the refusal judges read at least one answer token"),
    "n_fit": (1, "the methods fit on at least one prompt per class"),
    "n_select": (1, "selection scores at least one prompt per class"),
    "probe_folds": (2, "cross-validation needs two folds"),
    "batch_size": (1, "a batch holds at least one prompt"),
    "n_harmful": (1, "the organism needs harmful prompts"),
    "n_erased": (2, "the erasure needs prompts of both classes"),
    "epochs": (1, "training needs at least one epoch"),
    "signal_layers": (0, "0 turns the signal stage off"),
    "layer": (0, "layers count from 0"),
    "seed": (0, "numpy seeds are non-negative"),
}
_EMBEDDED_LAYERS = 30  # SmolLM2-135M-Instruct: the default model, and the organism's base
_SPLITS = ("train", "val", "test")


def check_choice(name: str, value, kind) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of the ``Literal`` ``kind``'s values."""
    allowed = get_args(kind)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_codes(name: str, codes) -> None:
    """Language codes: non-empty, no empty item, none twice."""
    if codes is None:
        return
    items = list(codes)
    if not items or any(not str(c).strip() for c in items):
        raise ValueError(f"{name} {items!r} has an empty item; give language codes like en,de,sw")
    dup = sorted({c for c in items if items.count(c) > 1})
    if dup:
        raise ValueError(f"{name} names {dup} more than once")


def model_depth(model: str) -> int | None:
    """Layer count of ``model`` without loading it, where a config says so cheaply."""
    if model in ("default", "organism", "organism-erased"):
        return _EMBEDDED_LAYERS
    config = Path(model) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    return None


def _check_data(data: str, split: str, splits: tuple[str, ...], files: FileOptions | None, languages) -> None:
    if not is_builtin(data) and not Path(data).exists():
        raise FileNotFoundError(f"data {data}: no such file or folder; give 'twins', 'natural', a PolyRefuse folder or a "
                                f"prompt file ({', '.join(sorted(READERS))})")
    if not is_builtin(data) and Path(data).is_dir():
        if not is_polyrefuse(data):
            raise ValueError(f"data {data} is a folder without PolyRefuse/ in it: give the Multilingual-Refusal "
                             "folder (upstream layout) or a prompt file")
        if split not in splits:
            raise ValueError(f"split {split!r}: on PolyRefuse this takes {' or '.join(splits)}")
    if is_builtin(data) or Path(data).is_dir():
        if files is not None:
            raise ValueError(f"file options read a prompt file, but data is {data!r}; give a prompt file")
        return
    if not is_prompt_file(data):
        raise ValueError(f"data {data}: prompt files must end in one of {sorted(READERS)}")
    files = files or FileOptions()
    if files.text is None and languages is None:
        raise ValueError(f"data {data}: name the text column (and the language column), or for a wide file with "
                         "one column per language, those columns (languages)")
    if files.text is not None and files.language is None:
        raise ValueError("a text column needs a language column (the column with each prompt's language code)")
    both = sorted(set(files.harmful_values) & set(files.harmless_values))
    if both:
        raise ValueError(f"{both} are both harmful and harmless values; each label value means one class")
    source = files.harmless_from
    if source is not None:
        if not Path(source).exists():
            raise FileNotFoundError(f"harmless_from {source}: no such file or folder")
        if Path(source).is_dir() and not is_polyrefuse(source):
            raise ValueError(f"harmless_from {source} is a folder without PolyRefuse/ in it")
        if Path(source).is_dir() and split not in _SPLITS:
            raise ValueError(f"split {split!r}: PolyRefuse has train, val and test")
        if not Path(source).is_dir() and not is_prompt_file(source):
            raise ValueError(f"harmless_from {source}: prompt files must end in one of {sorted(READERS)}")


@dataclass(frozen=True)
class RunConfig:
    """What every run shares: the model, the prompts and the seed."""

    model: str = "organism"  # "organism", "organism-erased", "default", a local folder or a Hugging Face id
    data: str = "builtin"  # "builtin" (= "twins"), "natural", a PolyRefuse folder (upstream layout) or a prompt file
    languages: tuple[str, ...] | None = None  # None: every language the data has
    split: str = "train"
    seed: int = 0
    max_new_tokens: int = 24
    judge: str = "substring"  # "substring", "logit" or a local Hugging Face model folder
    files: FileOptions | None = None  # how to read a prompt file (column names, label values)
    tiers: dict[str, str] = field(default_factory=dict)  # tiers of languages outside the paper's 23

    _SPLITS = _SPLITS
    _SEQUENCES = ("languages",)  # fields stored as tuples, whatever sequence they are given as
    _PATHS = ("data",)  # fields stored as strings, so a Path given for them compares and saves alike

    def __post_init__(self):
        for name in self._SEQUENCES:
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        for name in self._PATHS:
            object.__setattr__(self, name, str(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Every field checked; the first bad one raises a ValueError naming it."""
        for f in fields(self):
            low = AT_LEAST.get(f.name)
            value = getattr(self, f.name)
            if low is not None and value is not None and value < low[0]:
                raise ValueError(f"{f.name} {value}: must be at least {low[0]} ({low[1]})")
        check_codes("languages", self.languages)
        check_tiers(self.tiers)
        _check_data(self.data, self.split, self._SPLITS, self.files, self.languages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (tuples as lists), read back by :meth:`from_dict`."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """The config a :meth:`to_dict` (or a results file's ``config``) describes; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no option(s) {unknown}; options are {sorted(names)}")
        values = dict(values)
        if values.get("files") is not None:
            values["files"] = FileOptions(**{k: tuple(v) if isinstance(v, list) else v
                                             for k, v in values["files"].items()})
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def load(cls, path: str | Path):
        """The config saved in a results file (its ``config`` key) or a JSON file of options."""
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls.from_dict(payload.get("config", payload))


@dataclass(frozen=True)
class DiagnoseConfig(RunConfig):
    """``lowres-safety diagnose``: separability, refusal, the gap, where it breaks, and recoverability.

    The default data are the natural set's train half (20 + 20 per language, 10 languages),
    with the twins scored beside them as the form-matched check. ``full`` adds the sections
    that take many forward passes per prompt (report sections 4–6) and the readout comparison;
    ``analyses`` the paper's representation analyses (section 8: seconds, on the data's train,
    val and test prompts; PolyRefuse and the natural set have them).
    """

    data: str = "natural"  # the project's natural requests (train half): see RunConfig.data for the others
    n_per_class: int | None = 20  # prompts per class and language (None: all)
    analysis_per_class: int = 8  # prompts per class and language for attribution and the dose-response grid
    probe_folds: int = 5
    cache: bool = True  # read and write the activation cache
    form_control: bool = False  # the failure type from the form-controlled AUROC (both are reported)
    full: bool = False  # also where it breaks: dose-response, attribution, direction selection, causal transfer
    analyses: bool = True  # the paper's representation analyses (section 8), where the data have train and test


@dataclass(frozen=True)
class SteerConfig(RunConfig):
    """``lowres-safety steer``: refusal per language under every intervention method.

    ``strength`` is λ in α = λ·(q75 harmful − q25 harmless) of the source projections;
    ``ks`` the gate's recalibration examples per class (0: the source threshold);
    ``calibrate_on`` where a target language's k examples (and, with
    ``adapted_from="target"``, the adapted baselines' 32) come from: "train" (the fit
    prompts, as the released code), "val" (PolyRefuse val, prompts a model trained on train
    never saw) or "split" (other prompts of the evaluation split). ``adapted_from`` is
    where adapted AdaSteer and CAST take their 32 + 32
    examples: "pooled" (each low-resource language of the data's train split, pooled, one
    set for every target, CAST then tuned on each target's val split: the released code) or
    "target" (each target's own calibration pool). ``adasteer_vectors`` is the folder of
    upstream AdaSteer's vector files for this model (``vectors/<model>/``), which the
    released zero-shot run used; without it the k = 0 vectors are built from the source
    prompts with the same meaning. ``cast_data`` is CAST's own data folder
    (IBM/activation-steering ``docs/demo-data``), which the released zero-shot CAST run
    trains and tunes on; without it k = 0 CAST is fitted on the source prompts. ``mc`` is a multiple-choice file or
    folder in Global-MMLU's layout, or "builtin". ``sweeps`` adds the released generation sweeps
    (refusal by λ and by ablated layer: many generations of every harmful prompt).
    """

    split: str = "test"
    source_languages: tuple[str, ...] | None = None  # None: the high-resource languages of the data
    ks: tuple[int, ...] = (0, 1, 2, 4)
    n_per_class: int | None = 12
    n_fit: int | None = 32
    seeds: tuple[int, ...] | None = None  # None: (seed,)
    layer: int | None = None  # None: the preset's gate layer, else the best source AUROC in the middle half
    batch_size: int = 32
    strength: float = 1.0
    scope: Scope = "from_last"
    ablation: Ablation = "gate_layer"
    recalibration: Recalibration = "paper"
    calibrate_on: CalibrateOn = "train"
    adapted_from: AdaptedFrom = "pooled"
    adasteer_vectors: str | None = None  # upstream AdaSteer's vectors/<model>/ folder, for the k = 0 row
    cast_data: str | None = None  # CAST's demo-data folder, for the k = 0 row
    n_select: int = 8
    mc: str = "builtin"
    sweeps: bool = False  # the released generation sweeps (λ, ablated layer) on the scored harmful prompts

    _SPLITS = ("val", "test")
    _SEQUENCES = ("languages", "source_languages", "ks", "seeds")
    _PATHS = ("data", "mc")

    @classmethod
    def paper(cls, **overrides) -> SteerConfig:
        """The released run's protocol (:data:`PAPER`: full splits, budgets 0–64, 128 tokens), then ``overrides``."""
        return cls(**{**PAPER, **overrides})

    @property
    def upstream_files(self) -> dict[str, str]:
        """The baselines' authors' files this run reads, by method name (``methods.Context.upstream``)."""
        return {name: path for name, path in (("adasteer", self.adasteer_vectors), ("cast", self.cast_data)) if path}

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seeds the run repeats over: ``seeds``, or ``seed`` alone."""
        return self.seeds or (self.seed,)

    def validate(self) -> None:
        super().validate()
        if self.seeds is not None:
            if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) < len(self.seeds):
                raise ValueError(f"seeds {list(self.seeds)}: give distinct non-negative seeds, e.g. 0,1,2")
        check_codes("source_languages", self.source_languages)
        check_choice("scope", self.scope, Scope)
        check_choice("ablation", self.ablation, Ablation)
        check_choice("recalibration", self.recalibration, Recalibration)
        check_choice("calibrate_on", self.calibrate_on, CalibrateOn)
        check_choice("adapted_from", self.adapted_from, AdaptedFrom)
        if self.adasteer_vectors is not None:
            if not (Path(self.adasteer_vectors) / "RD").is_dir():
                raise ValueError(f"adasteer_vectors {self.adasteer_vectors!r}: no RD/ folder there; give the folder "
                                 "of one model's upstream AdaSteer vectors (vectors/<model>/, with RD/ and HD/)")
        if self.cast_data is not None:
            missing = [n for n in CAST_FILES if not (Path(self.cast_data) / n).is_file()]
            if missing:
                raise ValueError(f"cast_data {self.cast_data!r} lacks {missing}: give IBM/activation-steering's "
                                 "docs/demo-data folder")
        if not (math.isfinite(self.strength) and self.strength > 0):
            raise ValueError(f"strength {self.strength}: strength must be positive and finite (lambda in alpha = "
                             "lambda * spread)")
        if not self.ks or any(k < 0 or (self.n_fit is not None and k > self.n_fit) for k in self.ks):
            raise ValueError(f"ks {list(self.ks)}: each k must be 0 (the source threshold) up to n_fit {self.n_fit} "
                             "(the gate recalibrates on k of the n-fit calibration prompts per class)")
        if self.calibrate_on != "train" and (is_builtin(self.data) or is_prompt_file(self.data)):
            raise ValueError(f"calibrate_on {self.calibrate_on!r} needs a PolyRefuse folder: with the built-in set or "
                             "a prompt file the calibration pool already is the other half of the same prompts")
        depth = model_depth(self.model)
        if self.layer is not None and depth is not None and self.layer > depth - 1:
            raise ValueError(f"layer {self.layer}: this model has layers 0..{depth - 1}; use at most {depth - 1}")
