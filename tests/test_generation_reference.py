"""Generation against two references that share none of its code: a no-cache argmax loop and Hugging Face's generate.

Batched, unbatched and prefix-cached runs all share one KV-cached loop, so comparing them
with each other cannot see a bug they share (the new token's position, the cache or mask
update). Here each family's padded batch is compared with

- the no-cache reference: each prompt alone, the whole sequence re-run through the bridge
  for every new token, argmax of the last logits; and
- ``transformers``' own ``generate`` on the untouched copy of the Hugging Face model, with
  the same left-padded batch (hooks as plain PyTorch forward hooks on its decoder layers).
"""

import pytest
import torch
from helpers import FAMILIES, build_model

from lowres_safety import hooks as H
from lowres_safety.generation import generate
from lowres_safety.models import encode_chat

TEXTS = ["Hi", "How do I bake bread at home with flour, water and salt?", "Tell me a joke about cats", "Why?"]
N_NEW = 6
LAYER, ALPHA = 1, 4.0


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    bridge, hf = build_model(request.param, keep_reference=True, seed=3)
    v = torch.randn(bridge.cfg.d_model, generator=torch.Generator().manual_seed(7))
    return request.param, bridge, hf, v / v.norm()


def _toolkit(bridge, hooks) -> list[str]:
    """The toolkit's batched, KV-cached generation: each prompt's decoded answer."""
    out = generate(bridge, TEXTS, hooks, max_new_tokens=N_NEW, batch_size=4, stop_at_eos=False, progress=False)
    return out["completion"].tolist()


def _no_cache(bridge, hooks) -> list[str]:
    texts = []
    with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
        for text in TEXTS:
            ids = list(encode_chat(bridge.tokenizer, text).ids)
            new = []
            for _ in range(N_NEW):
                logits = bridge(torch.tensor([ids + new]))
                new.append(int(logits[0, -1].argmax()))
            texts.append(bridge.tokenizer.decode(new, skip_special_tokens=True))
    return texts


def _hf_generate(bridge, hf, edit=None) -> list[str]:
    """``hf.generate`` on the left-padded batch; ``edit`` changes decoder layer LAYER's output hidden states."""
    tok = bridge.tokenizer
    encoded = [list(encode_chat(tok, text).ids) for text in TEXTS]
    width = max(map(len, encoded))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    handle = None
    if edit is not None:
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (edit(output[0]),) + output[1:]
            return edit(output)
        handle = hf.model.layers[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                              do_sample=False, pad_token_id=pad)
    finally:
        if handle is not None:
            handle.remove()
    return [tok.decode(row[width:], skip_special_tokens=True) for row in out]


def test_unhooked_generation_equals_a_no_cache_argmax_loop(family):
    """Catches: a decoding step fed the wrong position, a cache or mask not updated, padding attended to."""
    _, bridge, _, _ = family
    assert _toolkit(bridge, []) == _no_cache(bridge, [])


def test_hooked_generation_equals_a_no_cache_argmax_loop(family):
    """Catches: hooks applied on the prefill but not on decoding steps (or to the wrong rows/positions there).
    Scope "all" adds at every position, which a no-cache loop re-running the whole sequence reproduces."""
    _, bridge, _, v = family
    for hooks in (H.add(v, ALPHA, LAYER, scope="all"), H.ablate(v, [LAYER], sites=("hook_resid_post",))):
        assert _toolkit(bridge, hooks) == _no_cache(bridge, hooks)


def test_generation_equals_huggingface_generate_on_a_padded_batch(family):
    """Catches: a decoding loop that differs from the library every model ships with (positions of left-padded
    rows, the family's cache type, Gemma-2's soft-capping), with and without an added vector."""
    _, bridge, hf, v = family
    assert _toolkit(bridge, []) == _hf_generate(bridge, hf)
    steered = _hf_generate(bridge, hf, edit=lambda h: h + ALPHA * v.to(h.dtype))
    assert _toolkit(bridge, H.add(v, ALPHA, LAYER, scope="all")) == steered
    assert steered != _hf_generate(bridge, hf)  # the vector changes what is generated, so the check bites
