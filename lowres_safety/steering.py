"""The fix, end to end: fit every method on source languages, then score it per target language.

:func:`fit_methods` builds, from high-resource activations at one layer, the refusal
direction, the paper's default strength α, the gate, and the AdaSteer- and CAST-style
rules. :func:`method_hooks` turns them into hook lists for one target language (the gate
recalibrated with ``k`` examples per class of that language). :func:`evaluate` generates
under each method and returns one row per language × method × k with harmful and
harmless refusal, selectivity Δ, KL and the gate's balanced accuracy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import baselines
from . import directions as dirs
from . import hooks as H
from .activations import ActivationSet
from .data import PromptSet, tier_of
from .evaluation import Judge, kl_divergence, refusal_rates, selectivity
from .files import atomic_write
from .gate import Gate
from .generation import generate, next_token_logprobs
from .probing import auroc, project

__all__ = ["METHODS", "FittedMethods", "choose_layer", "evaluate", "fit_methods", "method_hooks", "middle_layers"]

METHODS = ("none", "ablation", "addition", "adasteer", "cast", "gate")


def middle_layers(n_layers: int) -> list[int]:
    """The middle half of the network, where the steering layer is searched."""
    return list(range(n_layers // 4, (3 * n_layers) // 4))


def choose_layer(acts: ActivationSet, source_languages, position: str = "t_post_inst", *, n_layers: int) -> int:
    """Layer where the pooled source direction separates the source languages best (mean AUROC).

    Only the middle half of the model's ``n_layers`` (``model.cfg.n_layers``) is searched:
    the earliest layers carry little meaning and the last ones leave no room for steering
    to act. The layer count comes from the model, not from the layers extracted, so a
    set holding only the middle layers is searched over the same range.
    """
    middle = [l for l in acts.layers if l in middle_layers(n_layers)] or list(acts.layers)
    v = dirs.pooled(acts, source_languages)
    pi = acts.position_index(position)
    per_lang = [auroc(project(sub, v)[:, :, pi].numpy(), sub.prompts.labels)
                for sub in (acts.where(language=lang) for lang in source_languages)]
    scores = np.mean(per_lang, axis=0)  # [layer]
    return int(max(middle, key=lambda l: scores[acts.layer_index(l)]))


@dataclass(frozen=True)
class FittedMethods:
    """Everything fitted on the source languages at one layer."""

    layer: int
    direction: torch.Tensor  # [d_model], unit
    alpha: float
    gate: Gate
    adasteer: baselines.AdaSteerRule
    cast: baselines.CastRule
    source_languages: tuple[str, ...]
    n_layers: int
    scope: str = "from_last"  # where addition and the gate add α·v̂ (hooks.SCOPES)


def fit_methods(acts: ActivationSet, source_languages, n_layers: int, *, layer: int | None = None,
                position: str = "t_post_inst", lam: float = 1.0, rank: int | None = None, seed: int = 0,
                scope: str = "from_last") -> FittedMethods:
    """Direction, α (λ·(q75 harmful − q25 harmless)), gate, AdaSteer and CAST rules on the source data.

    ``scope`` is where addition and the gate add α·v̂: ``"from_last"`` (the last prompt
    token and every generated one, the paper's routing) or ``"all"`` (every prompt
    position too; the gate still decides from the last token, at its own layer).
    """
    H._check_scope(scope)
    source_languages = [lang for lang in source_languages if lang in acts.prompts.languages]
    if not source_languages:
        raise ValueError(f"no source language in the activations ({acts.prompts.languages})")
    layer = choose_layer(acts, source_languages, position, n_layers=n_layers) if layer is None else layer
    src = acts.where(language=source_languages)
    li, pi = src.layer_index(layer), src.position_index(position)
    v = dirs.unit(dirs.pooled(src)[li, pi])
    alpha = H.default_alpha(src, v, layer, position, lam)
    gate = Gate(rank=rank, seed=seed).fit(src, layer, position, source_languages)
    return FittedMethods(layer, v, alpha, gate, baselines.fit_adasteer(src, v, layer, alpha, position=position),
                         baselines.fit_cast(src, v, layer, position=position), tuple(source_languages), n_layers,
                         scope)


def method_hooks(fitted: FittedMethods, method: str, *, gate: Gate | None = None) -> list[H.Hook]:
    """Hooks of one method; ``gate`` overrides the source gate (e.g. a recalibrated one)."""
    f = fitted
    if method == "none":
        return []
    if method == "ablation":
        return H.ablate(f.direction, range(f.n_layers))
    if method == "addition":
        return H.add(f.direction, f.alpha, f.layer, scope=f.scope)
    if method == "adasteer":
        return baselines.adasteer(f.adasteer, f.direction)
    if method == "cast":
        return baselines.cast(f.cast, f.direction, f.alpha)
    if method == "gate":
        return H.route(gate or f.gate, f.direction, f.alpha, n_layers=f.n_layers, scope=f.scope)
    raise ValueError(f"unknown method {method!r}; use one of {METHODS}")


def _part_path(folder: Path | None, language: str, method: str, k: int) -> Path | None:
    return None if folder is None else folder / f"{language}-{method}-k{k}.json"


def evaluate(model, fitted: FittedMethods, eval_prompts: PromptSet, eval_acts: ActivationSet,
             calib_acts: ActivationSet, *, ks=(0, 1, 2, 4), methods=METHODS, max_new_tokens: int = 24,
             batch_size: int = 32, seed: int = 0, judge: Judge | None = None,
             parts: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate under every method for every language of ``eval_prompts``; rows and completions.

    ``calib_acts`` holds the target languages' calibration pool (disjoint from the
    evaluation prompts); the gate at ``k > 0`` is recalibrated on ``k`` of them per class.
    ``parts`` is a folder where each finished language × method is stored, so an
    interrupted run resumes where it stopped.
    """
    folder = Path(parts) if parts else None
    plan = [(lang, m, k) for lang in eval_prompts.languages for m in methods for k in (ks if m == "gate" else [0])]
    rows, texts = [], []
    bar = tqdm(plan, desc="steer", unit="run")
    base_cache: dict[str, torch.Tensor] = {}
    for lang, method, k in bar:
        bar.set_postfix_str(f"{lang} {method} k={k}")
        path = _part_path(folder, lang, method, k)
        if path is not None and path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            rows.append(stored["row"])
            texts.append(pd.DataFrame(stored["completions"]))
            continue
        prompts = eval_prompts.where(language=lang)
        acts = eval_acts.where(language=lang)
        gate = None
        if method == "gate":
            gate = fitted.gate if k == 0 else fitted.gate.recalibrate(calib_acts.where(language=lang), k, seed=seed)
        hooks = method_hooks(fitted, method, gate=gate)
        out = generate(model, prompts, hooks, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                       progress=False)
        harmless = prompts.where(subset="harmless")
        if lang not in base_cache:
            base_cache[lang] = next_token_logprobs(model, harmless, batch_size=batch_size)
        kl = float(kl_divergence(model, harmless, hooks, base=base_cache[lang], batch_size=batch_size).mean())
        sel = selectivity(refusal_rates(out, judge)).iloc[0]
        bacc = gate.balanced_accuracy(acts) if gate else None
        row = {"language": lang, "tier": tier_of(lang), "method": method, "k": k,
               "harmful_refusal": float(sel["harmful_refusal"]), "harmless_refusal": float(sel["harmless_refusal"]),
               "selectivity": float(sel["selectivity"]), "kl": kl, "gate_balanced_accuracy": bacc}
        out = out.assign(method=method, k=k)
        keep = [c for c in ("id", "language", "subset", "source_id", "method", "k", "completion", "n_new_tokens",
                            "gate_score", "alpha", "ablated") if c in out]
        if path is not None:
            payload = {"row": row, "completions": out[keep].to_dict(orient="list")}
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, ensure_ascii=False), "utf-8"))
        rows.append(row)
        texts.append(out[keep])
    return pd.DataFrame(rows), pd.concat(texts, ignore_index=True)


def config_key(config: dict) -> str:
    """Short hash of a run's settings, naming its folder of finished parts."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
