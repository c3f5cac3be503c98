"""Interventions as TransformerLens hook functions, composable as lists.

Every factory returns a list of ``(hook_name, fn)`` pairs with TransformerLens's hook
signature ``fn(activation, hook) -> activation``; composing interventions is adding
lists, and ``model.hooks(fwd_hooks=a + b)`` (or ``run_with_hooks``) applies them and
removes them again, on error too. Hooks on the same hook point run in list order:
``ablate(v, L) + add(v, a, L)`` leaves exactly ``a`` along ``v`` at that point, while
``add(v, a, L) + ablate(v, L)`` removes the addition as well.

Directions are ``[d_model]`` vectors; every hook uses the unit vector ``v̂``.

**Token scopes** (``scope=``) say which positions an ``add`` or ``ablate`` touches:
``"all"`` every token; ``"from_last"`` the last prompt token and every generated token;
``"last"`` the last prompt token only. Generation (:func:`~lowres_safety.generation.generate`)
runs the prompt in one forward pass (the *prefill*) and then one token per pass with a
KV cache inside :func:`decoding`; hooks read that flag rather than guessing from the
sequence length, so a one-token prompt is still a prefill. Any plain forward pass is a
prefill. Prompts are left-padded, so the last prompt token is position -1 in every row.

**The decoding loop is part of the contract.** Hooks that decide once per prompt (:func:`route`
and :class:`Steer`, the ``"last"`` scope, AdaSteer's and CAST's hooks) raise a RuntimeError
inside TransformerLens's or Hugging Face's own ``generate``, which run each decoding step as
a new forward pass: they would decide again on every generated token. ``"all"`` and
``"from_last"`` mean the same in any loop that decodes one token at a time, and run there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ._runtime.decoding import Hook, check_decoding_loop, decoding, is_decoding, prompt_attention, prompt_mask

__all__ = [
    "ABLATIONS",
    "ARDITI_SITES",
    "SCOPES",
    "Decision",
    "Hook",
    "Steer",
    "ablate",
    "add",
    "check_decoding_loop",
    "check_scope",
    "decoding",
    "default_alpha",
    "is_decoding",
    "orthogonalize_weights",
    "patch",
    "prompt_attention",
    "project_out",
    "prompt_mask",
    "route",
    "steers_in",
]

SCOPES = ("all", "from_last", "last")
#: Where Arditi et al. (2024) ablate, at every layer, so no block can write the direction back.
ARDITI_SITES = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")

# ---------------------------------------------------------------- helpers


def _unit_vector(direction) -> Float[Tensor, " d_model"]:
    v = torch.as_tensor(direction).detach().float().cpu()
    if v.ndim != 1:
        raise ValueError(f"a direction must be a [d_model] vector; got shape {tuple(v.shape)} "
                         "(index a [layer, position, d_model] direction first, e.g. v[layer_index, -1])")
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the direction is zero or not finite")
    return v / norm


def _finite(alpha: float, name: str = "alpha") -> float:
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"{name} must be finite, got {alpha}")
    return alpha


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; use one of {SCOPES}")
    return scope


def _layers(layers) -> list[int]:
    layers = [layers] if isinstance(layers, int) else list(layers)
    if not layers or any(not isinstance(l, (int, np.integer)) or l < 0 for l in layers):
        raise ValueError(f"layers must be a non-negative int or a non-empty list of them, got {layers!r}")
    return [int(l) for l in layers]


def _on(v: Tensor, act: Tensor, hook) -> Tensor:
    """The unit vector on the activation's device and dtype, after checking the width."""
    if act.shape[-1] != v.shape[0]:
        name = getattr(hook, "name", "this hook point")
        raise ValueError(f"direction has width {v.shape[0]} but {name} carries d_model={act.shape[-1]}")
    return v.to(act.device, act.dtype)


def _positions(scope: str) -> slice | None:
    """Positions a scope covers in the current pass (None: none).

    ``"from_last"`` reads the same under any loop that runs decoding steps one token at a
    time (the last position is the new token); ``"last"`` needs the toolkit's decoding loop.
    """
    if scope == "last" and not is_decoding():
        check_decoding_loop("scope='last'")
    if is_decoding():
        return None if scope == "last" else slice(None)
    return slice(None) if scope == "all" else slice(-1, None)


def project_out(x: Tensor, u: Tensor) -> Tensor:
    """``x`` less its component along the unit vector ``u`` (the directional ablation of one activation)."""
    return x - (x @ u).unsqueeze(-1) * u


# ---------------------------------------------------------------- unconditional


def ablate(direction, layers, *, sites: Iterable[str] = ARDITI_SITES, scope: str = "all") -> list[Hook]:
    """Directional ablation h ← h − (h·v̂)v̂ at ``sites`` of each of ``layers`` (Arditi et al. 2024).

    Pass ``range(model.cfg.n_layers)`` for Arditi's full ablation; one layer with
    ``sites=("hook_resid_post",)`` for the single-layer form.
    """
    v, scope = _unit_vector(direction), check_scope(scope)

    def fn(act: Float[Tensor, "batch pos d_model"], hook):
        where = _positions(scope)
        if where is None:
            return act
        u = _on(v, act, hook)
        out = act.clone()
        out[:, where] = project_out(act[:, where], u)
        return out

    return [(f"blocks.{layer}.{site}", fn) for layer in _layers(layers) for site in sites]


def add(direction, alpha: float, layers, *, site: str = "hook_resid_post", scope: str = "all") -> list[Hook]:
    """Activation addition h ← h + α v̂ at ``site`` of each of ``layers``."""
    v, alpha, scope = _unit_vector(direction), _finite(alpha), check_scope(scope)

    def fn(act: Float[Tensor, "batch pos d_model"], hook):
        where = _positions(scope)
        if where is None:
            return act
        out = act.clone()
        out[:, where] = act[:, where] + alpha * _on(v, act, hook)
        return out

    return [(f"blocks.{layer}.{site}", fn) for layer in _layers(layers)]


def patch(cached: Float[Tensor, "batch d_model"] | Float[Tensor, " d_model"], layer: int, position: int = -1,
          *, site: str = "hook_resid_post") -> list[Hook]:
    """Activation patching: overwrite one position with an activation from another run.

    ``position`` counts from the end (left padding keeps it on the same token). Only the
    prefill is patched; decoding steps have no prompt positions.
    """
    cached = torch.as_tensor(cached).detach()
    if cached.ndim not in (1, 2):
        raise ValueError(f"cached activation must be [d_model] or [batch, d_model]; got {tuple(cached.shape)}")
    if not isinstance(position, int) or position >= 0:
        raise ValueError(f"position counts from the end and must be a negative int, got {position!r}")

    def fn(act: Float[Tensor, "batch pos d_model"], hook):
        if is_decoding():
            return act
        if cached.shape[-1] != act.shape[-1] or (cached.ndim == 2 and cached.shape[0] != act.shape[0]):
            raise ValueError(f"cached activation {tuple(cached.shape)} does not fit {hook.name} {tuple(act.shape)}")
        if -position > act.shape[1]:
            raise ValueError(f"position {position} is outside a {act.shape[1]}-token input")
        out = act.clone()
        out[:, position] = cached.to(act.device, act.dtype)
        return out

    return [(f"blocks.{int(layer)}.{site}", fn)]


# ---------------------------------------------------------------- conditional


Decision = tuple[Float[Tensor, " batch"], Float[Tensor, " batch"], Bool[Tensor, " batch"]]


class Steer:
    """Per-row steering decided once per prompt, from the last prompt token of the prefill.

    ``decide(x_last)`` maps the ``[batch, d_model]`` activations at ``layer`` to
    ``(score, alpha, ablate)``: each row gets ``alpha`` v̂ added at the scope's positions
    (from then on, decoding steps included) and, where ``ablate`` is true, the direction
    removed at every token of this layer and, through :meth:`ablate_rows`, of the layers
    after it. The decision is stored for the decoding steps and exposed as ``score``,
    ``alpha`` and ``ablate`` so generation can report which rows were steered.
    """

    def __init__(self, decide: Callable[[Tensor], Decision], direction, layer: int, *, scope: str = "from_last"):
        self.decide, self.v, self.layer = decide, _unit_vector(direction), int(layer)
        self.scope = check_scope(scope)
        self.score = self.alpha = self.ablate = None

    def read(self, act: Float[Tensor, "batch pos d_model"], hook):
        u = _on(self.v, act, hook)
        if not is_decoding():
            check_decoding_loop("a routed hook (hooks.route / hooks.Steer)")
            score, alpha, ablate = self.decide(act[:, -1].float())
            self.score, self.alpha, self.ablate = score.detach().cpu(), alpha.detach().cpu(), ablate.detach().cpu()
        elif self.alpha is None or self.alpha.shape[0] != act.shape[0]:
            raise RuntimeError("a decoding step reached a conditional hook without a matching prefill")
        out = self.ablate_rows(act, hook)
        where = _positions(self.scope)
        if where is not None:
            alpha = self.alpha.to(act.device, act.dtype)[:, None, None]
            out = out.clone() if out is act else out
            out[:, where] = out[:, where] + alpha * u
        return out

    def ablate_rows(self, act: Float[Tensor, "batch pos d_model"], hook):
        if self.ablate is None or not bool(self.ablate.any()):
            return act
        if self.ablate.shape[0] != act.shape[0]:
            raise RuntimeError("batch size changed between the conditional hook's decision and this pass")
        u = _on(self.v, act, hook)
        rows = self.ablate.to(act.device)
        out = act.clone()
        out[rows] = project_out(act[rows], u)
        return out

    def hooks(self, n_layers: int | None = None, sites: Iterable[str] = ARDITI_SITES) -> list[Hook]:
        """The read hook at ``blocks.{layer}.hook_resid_post``, plus row ablation at the later layers."""
        out: list[Hook] = [(f"blocks.{self.layer}.hook_resid_post", self.read)]
        if n_layers is not None:
            if n_layers <= self.layer:
                raise ValueError(f"n_layers={n_layers} but the decision is read at layer {self.layer}")
            out += [(f"blocks.{l}.{s}", self.ablate_rows) for l in range(self.layer + 1, n_layers) for s in sites]
        return out


def steers_in(hooks: Iterable[Hook]) -> list[Steer]:
    """The conditional steerers behind a hook list (to report their per-row decisions)."""
    found = []
    for _, fn in hooks:
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, Steer) and fn.__func__ is Steer.read and owner not in found:
            found.append(owner)
    return found


def _gate_layer_only(steer: Steer, n_layers: int | None, sites: Iterable[str]) -> list[Hook]:
    return steer.hooks()


def _all_later_layers(steer: Steer, n_layers: int | None, sites: Iterable[str]) -> list[Hook]:
    if n_layers is None:
        raise ValueError("ablation='all_later_layers' needs n_layers (model.cfg.n_layers)")
    return steer.hooks(n_layers, sites)


#: Where routing ablates the direction from rows the gate calls harmless.
ABLATIONS = {"gate_layer": _gate_layer_only, "all_later_layers": _all_later_layers}


def route(gate, direction, alpha: float, layer: int | None = None, *, n_layers: int | None = None,
          scope: str = "from_last", ablation: str = "gate_layer", sites: Iterable[str] = ARDITI_SITES) -> list[Hook]:
    """The paper's routing: the gate reads the last prompt token at its layer, once per prompt.

    Rows judged harmful get +α v̂ at the gate's layer on the last prompt token and every
    generated token (``scope``); rows judged harmless get the direction ablated at every
    token. ``ablation="gate_layer"`` (default) ablates at the gate layer's block output
    only, as the released code does (``interventions.py::make_conditional_refusal_hook``,
    installed on block L alone); ``"all_later_layers"`` also ablates at ``sites`` of every
    later layer (``n_layers`` = ``model.cfg.n_layers``), a far stronger intervention whose
    harmless refusal and KL are not comparable with the paper's. Layers before the gate's
    are left alone: in one forward pass they run before the decision exists.
    """
    gate._check_fitted()
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; use one of {sorted(ABLATIONS)}")
    if layer is not None and layer != gate.layer_:
        raise ValueError(f"this gate was fitted at layer {gate.layer_}, not {layer}")
    if gate.position_ != "t_post_inst":
        raise ValueError(f"route reads the last prompt token; this gate was fitted at {gate.position_!r}")
    v, alpha = _unit_vector(direction), _finite(alpha)
    if v.shape[0] != gate.d_model_:
        raise ValueError(f"direction has width {v.shape[0]}; the gate was fitted on d_model={gate.d_model_}")

    def decide(x: Tensor) -> Decision:
        margin = gate.margin(x)
        harmful = margin >= 0
        return margin, harmful.to(x.dtype) * alpha, ~harmful

    return ABLATIONS[ablation](Steer(decide, v, gate.layer_, scope=scope), n_layers, sites)


def default_alpha(acts, direction, layer: int, position: str = "t_post_inst", lam: float = 1.0) -> float:
    """The paper's steering strength: λ · (75th pct of harmful − 25th pct of harmless projections).

    Projections on v̂ of the source prompts in ``acts`` at one layer and position. A gap
    ≤ 0 (harmful prompts not above harmless ones) is an error, as in the released code
    (``low-resource-safety``: its steering-strength helper raises there too): the
    direction does not separate the classes at this layer, so no positive α follows.
    """
    v = _unit_vector(direction)
    proj = (acts.at(layer, position).float() @ v).numpy()
    y = acts.prompts.labels.astype(bool)
    if y.all() or not y.any():
        raise ValueError("default_alpha needs harmful and harmless source prompts")
    gap = float(np.quantile(proj[y], 0.75) - np.quantile(proj[~y], 0.25))
    if not gap > 0:
        raise ValueError(f"at layer {layer} the harmful prompts' 75th-percentile projection is not above the "
                         f"harmless prompts' 25th ({gap:.3g}); the direction does not separate them there, so "
                         "there is no steering strength: pick another layer or give alpha yourself")
    return _finite(lam) * gap


# ---------------------------------------------------------------- weights


@torch.no_grad()
def orthogonalize_weights(model, direction, *, inplace: bool = False):
    """Directional ablation baked into the weights (Arditi et al. 2024): a copy of the model.

    Every matrix that writes to the residual stream (token embedding, attention output,
    MLP output, and their biases) has v̂ projected out, which equals :func:`ablate` at
    every layer's ``hook_resid_pre``/``hook_attn_out``/``hook_mlp_out``. A tied
    unembedding is untied first, so the logits' readout is unchanged. Gemma-2 normalises
    each block's outputs after projection, so there the weights cannot carry the ablation.
    """
    u = _unit_vector(direction)
    if u.shape[0] != model.cfg.d_model:
        raise ValueError(f"direction has width {u.shape[0]}; the model has d_model={model.cfg.d_model}")
    if any(hasattr(block, "ln1_post") or hasattr(block, "ln2_post") for block in model.blocks):
        raise ValueError("this model normalises attention/MLP outputs after projection (Gemma-2 post-norms); "
                         "ablation cannot be baked into its weights: use hooks.ablate instead")
    target = model if inplace else copy.deepcopy(model)
    embed = target.embed.original_component
    unembed = target.unembed.original_component
    if unembed.weight is embed.weight:
        unembed.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
    uu = u.to(embed.weight.device, embed.weight.dtype)
    embed.weight -= (embed.weight @ uu)[:, None] * uu
    for block in target.blocks:
        for linear in (block.attn.o.original_component, block.mlp.out.original_component):
            uu = u.to(linear.weight.device, linear.weight.dtype)
            linear.weight -= uu[:, None] * (uu @ linear.weight)[None, :]
            if linear.bias is not None:
                linear.bias -= (linear.bias @ uu) * uu
    return target
