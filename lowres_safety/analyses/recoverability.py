"""How many target examples does a readout need? The paper's few-shot recoverability, as released.

Source: github rashadaziz/low-resource-safety ``scripts/recoverability/compute_lrl_fewshot_recoverability.py``
(``run_language``) with ``configs/recoverability/compute_lrl_fewshot_recoverability.yaml``,
``src/multilingual_latent_safety/probes.py`` (``sample_balanced_indices``,
``logistic_regression_scores``, ``mlp_scores``) and ``scripts/hrl_direction/compute_hrl_pooled_direction.py``.

Per target language, budget n and seed s, n harmful and n harmless **train** prompts are
drawn (``stable_seed(s, model, language, n)``; not nested across budgets) and every readout
is scored on the language's **test** prompts:

- ``hrl_direction`` (the reference the paper's figure starts from): the first right singular
  vector of the stacked unit per-language directions of the source languages, sign-aligned
  to the first source language's (:func:`~lowres_safety.directions.pc1_of_directions`); fixed,
  so its AUC does not move with n;
- ``full_local_mean_difference`` (reference): the target's whole train split, difference of means;
- ``local_mean_difference``, ``logistic_regression`` (40 AdamW steps, BCE + 0.01·‖w‖², zero
  init, standardised) and ``mlp`` (32 GELU units, dropout 0.1, 40 AdamW steps): fitted on the 2n
  examples alone;
- controls: ``permutation_mean_difference`` (the 2n labels shuffled, ``control="permutation_label"``)
  and ``random_direction`` (a fresh Gaussian direction per draw): both should sit at chance.

The released script reports AUC only. Here every row also has average precision and the
thresholded rates (precision, recall, F1, accuracy, balanced accuracy) at the threshold with
the best F1 on the readout's scores of the 2n drawn examples (the released comparison's
``threshold_source=target_train_budget``, per language), so a readout that ranks well but
cannot be thresholded from n examples shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import directions as dirs
from ..activations import ActivationSet
from ..data import tier_of
from .metrics import binary_metrics, language_thresholds, macro_rows, stable_seed

__all__ = ["READOUTS", "draw_balanced", "draw_shots", "recoverability"]

#: (readout, control) pairs in the order of the released rows.
READOUTS = (("hrl_direction", "none"), ("full_local_mean_difference", "reference"),
            ("local_mean_difference", "none"), ("logistic_regression", "none"), ("mlp", "none"),
            ("permutation_mean_difference", "permutation_label"), ("random_direction", "random_direction"))


def draw_balanced(n_harmful: int, n_harmless: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """k harmful and k harmless row indices, as ``sample_balanced_indices``: one generator, harmful drawn first."""
    if k > min(n_harmful, n_harmless):
        raise ValueError(f"{k} per class requested from {n_harmful} harmful and {n_harmless} harmless prompts")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_harmful, generator=g)[:k], torch.randperm(n_harmless, generator=g)[:k]


def draw_shots(pool: ActivationSet, k: int, seed: int) -> ActivationSet:
    """k harmful and k harmless prompts of ``pool`` drawn by :func:`draw_balanced`."""
    y = pool.prompts.labels
    harmful, harmless = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    hi, ni = draw_balanced(len(harmful), len(harmless), k, seed)
    ids = pool.prompts.frame["id"].to_numpy()
    return pool.where(id=ids[np.concatenate([harmful[hi.numpy()], harmless[ni.numpy()]])].tolist())


def _standardised(x_fit: Tensor, *rest: Tensor) -> list[Tensor]:
    mean, std = x_fit.mean(0), x_fit.std(0, unbiased=False).clamp_min(1e-6)
    return [(x - mean) / std for x in (x_fit, *rest)]


def _logistic(x: Tensor, y: Tensor, x_eval: Tensor, seed: int) -> Tensor:
    """``logistic_regression_scores``: zero init, 40 full-batch AdamW steps (lr 0.05), BCE + 0.01·‖w‖²."""
    torch.manual_seed(seed)
    z, z_eval = _standardised(x, x_eval)
    w, b = torch.zeros(z.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=0.05, weight_decay=0.0)
    with torch.enable_grad():
        for _ in range(40):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + 0.01 * (w * w).sum()
            loss.backward()
            opt.step()
    return (z_eval @ w + b).detach()


def _mlp(x: Tensor, y: Tensor, x_eval: Tensor, seed: int) -> Tensor:
    """``mlp_scores``: Linear(d, 32), GELU, dropout 0.1, Linear(32, 1); 40 AdamW steps (lr 1e-3, wd 1e-3)."""
    torch.manual_seed(seed)
    z, z_eval = _standardised(x, x_eval)
    net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], 32), torch.nn.GELU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(32, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    net.train()
    with torch.enable_grad():
        for _ in range(40):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(net(z)[:, 0], y).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net(z_eval)[:, 0]


def _project(v: Tensor, *xs: Tensor) -> list[Tensor]:
    u = dirs.unit(v.float())
    return [x @ u for x in xs]


def recoverability(acts: ActivationSet, layer: int, *, source_languages: Sequence[str],
                   languages: Sequence[str] | None = None, position: str = "t_post_inst",
                   budgets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64), seeds: Sequence[int] = range(10),
                   fit_split: str = "train", eval_split: str = "test", model: str = "",
                   progress: bool = True) -> pd.DataFrame:
    """The released few-shot recoverability table: one row per language × budget × seed × readout, plus macro rows.

    ``acts`` holds the source languages' ``fit_split`` prompts and each target's
    ``fit_split`` (drawn from) and ``eval_split`` (scored) prompts at ``layer``. ``model``
    enters the draws' seed as in the released code (its Hugging Face id there). Budgets
    larger than a target's smaller train class are skipped. Columns: language, tier,
    budget, seed, readout, control, the metrics of :func:`~lowres_safety.analyses.metrics.binary_metrics`,
    threshold; macro rows (``__macro__``, ``__macro_<tier>__``) average over languages.
    """
    li, pi = acts.layer_index(layer), acts.position_index(position)
    fit = acts.where(split=fit_split)
    v_hrl = dirs.pc1_of_directions(fit.where(language=list(source_languages)), source_languages, layer, position)
    targets = [lang for lang in (languages or acts.prompts.languages) if lang not in source_languages]
    rows = []
    for lang in tqdm(targets, desc="recoverability", unit="language", disable=not progress):
        train, test = fit.where(language=lang), acts.where(language=lang, split=eval_split)
        if len(test) == 0:
            raise ValueError(f"{lang!r} has no {eval_split!r} prompts to score")
        x, y = train.acts[:, li, pi].float(), torch.from_numpy(train.prompts.labels.astype(np.float32))
        x_test, y_test = test.acts[:, li, pi].float(), test.prompts.labels.astype(int)
        harmful, harmless = x[y == 1], x[y == 0]
        full_local = harmful.mean(0) - harmless.mean(0)
        for n in budgets:
            if n > min(len(harmful), len(harmless)):
                continue
            for s in seeds:
                hi, ni = draw_balanced(len(harmful), len(harmless), n, stable_seed(s, model, lang, n))
                shots = torch.cat([harmful[hi], harmless[ni]])
                y_shots = torch.cat([torch.ones(n), torch.zeros(n)])
                perm = y_shots[torch.randperm(2 * n, generator=torch.Generator().manual_seed(
                    stable_seed(s, model, lang, n, "perm")))]
                random_v = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(
                    stable_seed(s, model, lang, n, "random_direction")))
                seed_fit = stable_seed(s, model, lang, n)
                scored = {
                    "hrl_direction": _project(v_hrl, shots, x_test),
                    "full_local_mean_difference": _project(full_local, shots, x_test),
                    "local_mean_difference": _project(shots[:n].mean(0) - shots[n:].mean(0), shots, x_test),
                    "logistic_regression": list(_logistic(shots, y_shots, torch.cat([shots, x_test]),
                                                          seed_fit).split([2 * n, len(x_test)])),
                    "mlp": list(_mlp(shots, y_shots, torch.cat([shots, x_test]), seed_fit).split([2 * n, len(x_test)])),
                    "permutation_mean_difference": _project(shots[perm == 1].mean(0) - shots[perm == 0].mean(0),
                                                            shots, x_test),
                    "random_direction": _project(random_v, shots, x_test),
                }
                for readout, control in READOUTS:
                    on_shots, on_test = (t.numpy() for t in scored[readout])
                    t = language_thresholds({lang: (on_shots, y_shots.numpy())})[lang]
                    rows.append({"language": lang, "tier": tier_of(lang), "budget": n, "seed": s, "readout": readout,
                                 "control": control, "threshold": t, "layer": layer,
                                 **binary_metrics(on_test, y_test, t)})
    frame = pd.DataFrame(rows)
    return macro_rows(frame, ["budget", "seed", "readout", "control"]) if len(frame) else frame
