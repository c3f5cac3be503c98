"""Run the bridge with only the hook points in use: the rest of the model runs as plain Hugging Face.

A TransformerBridge wraps every Hugging Face module (blocks, attention, MLP, norms,
every linear layer) in a bridge component that fires ``hook_in``/``hook_out`` and, for
attention, reimplements it eagerly so ``hook_pattern`` exists. That costs Python time
on every call — about 20% of a decoding step of SmolLM2-135M on CPU, more on a GPU —
even where no hook is attached. Inside ``with lean(model):`` every bridge component
whose subtree has no live hook is swapped back to the module it wraps, and every
component whose only live hooks are its own ``hook_in``/``hook_out`` into a thin shim
that calls those two hook points around the wrapped module. Hooks are still
TransformerLens hooks on the same hook points and see the same tensors; the weights are
the same tensors (compatibility mode loads its processed weights into the wrapped
modules), so results equal the bridge's own forward (tested on every family).

Enter it *after* the hooks are attached (``model.hooks(...)``) and attach none inside:
a hook point swapped out is not called. Everything is restored on exit, errors too.
``sdpa=True`` also runs attention through PyTorch's fused kernel where no attention
component is kept and the model has no attention soft cap: the same values at every
real position, less memory on long prompts, but padding positions hold other values
than under the eager kernel, so use it only where padding is never read.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["lean"]


class _Shim(nn.Module):
    """``hook_in`` → the wrapped module → ``hook_out``: a component whose only live hooks are those two."""

    def __init__(self, hook_in: nn.Module, hook_out: nn.Module, inner: nn.Module):
        super().__init__()
        self.hook_in, self.hook_out, self.inner = hook_in, hook_out, inner

    def forward(self, *args, **kwargs):
        if args and isinstance(args[0], torch.Tensor):
            args = (self.hook_in(args[0]),) + args[1:]
        elif isinstance(kwargs.get("hidden_states"), torch.Tensor):
            kwargs["hidden_states"] = self.hook_in(kwargs["hidden_states"])
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            return (self.hook_out(out[0]),) + out[1:]
        return self.hook_out(out) if isinstance(out, torch.Tensor) else out


@dataclass(eq=False)
class _Site:
    """One bridge component in the Hugging Face module tree, and the bridge components inside it."""

    parent: nn.Module
    name: str
    component: nn.Module
    inner: nn.Module
    inside: tuple  # every hook point in its subtree
    own: frozenset  # ids of its own hook_in / hook_out
    direct: frozenset  # ids of every hook point that is its own child (forward hooks elsewhere may fire them)
    shim: nn.Module | None
    attention: bool
    children: list[_Site] = field(default_factory=list)


_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its sites (structure only)


def _index(model) -> list[_Site]:
    """The bridge components of ``model``'s Hugging Face tree, built once per model."""
    sites = _INDEX.get(model)
    if sites is not None and all(s.parent._modules.get(s.name) is s.component for s in sites):
        return sites
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    seen: set[int] = set()

    def visit(module: nn.Module) -> list[_Site]:
        found = []
        if id(module) in seen:
            return found
        seen.add(id(module))
        for name, child in module._modules.items():
            if child is None or name == "_original_component" or isinstance(child, HookPoint):
                continue
            inner = child._modules.get("_original_component") if isinstance(child, GeneralizedComponent) else None
            if inner is None:
                found += visit(child)
                continue
            hook_in, hook_out = child._modules.get("hook_in"), child._modules.get("hook_out")
            io = isinstance(hook_in, HookPoint) and isinstance(hook_out, HookPoint)
            site = _Site(module, name, child, inner, tuple(m for m in child.modules() if isinstance(m, HookPoint)),
                         frozenset((id(hook_in), id(hook_out))) if io else frozenset(),
                         frozenset(id(m) for m in child._modules.values() if isinstance(m, HookPoint)),
                         _Shim(hook_in, hook_out, inner) if io else None, isinstance(child, AttentionBridge))
            site.children = visit(inner)
            found.append(site)
        return found

    root = getattr(model, "original_model", None)
    sites = visit(root) if root is not None else []
    _INDEX[model] = sites
    return sites


def _is_live(hook_point) -> bool:
    return bool(hook_point._forward_hooks or hook_point._backward_hooks)


def _apply(sites: list[_Site], swaps: list, kept_attention: list, drop: bool = False) -> None:
    for site in sites:
        live = () if drop else [hp for hp in site.inside if _is_live(hp)]
        if not live:
            swaps.append(site)
            site.parent._modules[site.name] = site.inner
            _apply(site.children, swaps, kept_attention, drop=True)
        elif site.shim is not None and all(id(hp) in site.own for hp in live):
            swaps.append(site)
            site.parent._modules[site.name] = site.shim
            _apply(site.children, swaps, kept_attention, drop=True)
        else:
            kept_attention.append(site.attention)
            if any(id(hp) in site.direct and id(hp) not in site.own for hp in live):
                # a hook point of its own besides hook_in/out (hook_mlp_in, Granite's scaled
                # outputs) is fired by forward hooks on its bridged children: keep them all
                kept_attention.append(True)
            else:
                _apply(site.children, swaps, kept_attention)


@contextmanager
def lean(model, sdpa: bool = False) -> Iterator[None]:
    """Inside: bridge components without live hooks run as the plain modules they wrap (module docstring)."""
    swaps: list[_Site] = []
    kept_attention: list[bool] = []
    config = getattr(getattr(model, "original_model", None), "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = False
    cfg = getattr(model, "cfg", None)
    forks = any(getattr(cfg, flag, False) for flag in ("use_split_qkv_input", "use_attn_in", "use_hook_mlp_in"))
    try:
        if not forks:  # those read the residual through pre-hooks on bridged norms: leave the bridge whole
            _apply(_index(model), swaps, kept_attention)
        switch = (sdpa and not forks and before == "eager" and not any(kept_attention)
                  and getattr(config, "attn_logit_softcapping", None) is None)
        if switch:
            config._attn_implementation = "sdpa"
        yield
    finally:
        if switch:
            config._attn_implementation = before
        for site in reversed(swaps):
            site.parent._modules[site.name] = site.component
