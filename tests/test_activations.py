import pytest
import torch
from helpers import FAMILIES, build_model, reference_acts

import lowres_safety.activations as activations
from lowres_safety import data, directions, extract
from lowres_safety._runtime.batching import left_pad, length_batches
from lowres_safety.activations import ActivationSet


@pytest.fixture(scope="module")
def prompts():
    # en is short, yo and ar tokenize long: real padding inside every batch of 5
    return data.load_builtin(["en", "ar", "yo"], n_per_class=3, seed=1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_padded_extraction_equals_unbatched(family, prompts):
    model = build_model(family)
    acts = extract(model, prompts, "all", ("t_inst", "t_post_inst", "t_inst-1"), batch_size=5, progress=False)
    expected = reference_acts(model, prompts, range(model.cfg.n_layers), ("t_inst", "t_post_inst", "t_inst-1"))
    assert acts.acts.dtype == torch.float32
    torch.testing.assert_close(acts.acts, expected, atol=1e-4, rtol=1e-4)


def test_default_model_batched_equals_unbatched(default_model, prompts):
    layers = [0, 9, 29]
    acts = extract(default_model, prompts, layers, ("t_inst", "t_post_inst"), batch_size=6, progress=False)
    expected = reference_acts(default_model, prompts, layers, ("t_inst", "t_post_inst"))
    # SmolLM2's residual stream has entries near 700 beside ones near 0, and the fused attention
    # kernel sums in another order: compare each vector within float32 rounding of its norm
    # (measured 1.7e-6), not each entry against an absolute tolerance
    error = (acts.acts - expected).norm(dim=-1) / expected.norm(dim=-1)
    assert float(error.max()) < 1e-5


def test_interleaved_batches_give_the_same_result(prompts):
    model = build_model("llama")
    grouped = extract(model, prompts, [1], "t_post_inst", batch_size=4, progress=False)
    arrival = extract(model, prompts, [1], "t_post_inst", batch_size=4, group_by_length=False, progress=False)
    torch.testing.assert_close(grouped.acts, arrival.acts, atol=1e-5, rtol=1e-5)


def test_forward_stops_after_the_deepest_layer_and_leaves_no_hooks(prompts):
    model = build_model("qwen2")
    seen = []  # on the wrapped modules: they run whether or not the bridge's own components do
    model.blocks[2].attn.original_component.register_forward_hook(lambda *a: seen.append("attn2"))
    model.ln_final.original_component.register_forward_hook(lambda *a: seen.append("ln_final"))
    extract(model, prompts, [0, 1], "t_post_inst", progress=False)
    assert seen == []  # block 2 never ran
    extract(model, prompts, [2], "t_post_inst", progress=False)
    assert "attn2" in seen and "ln_final" not in seen  # no final norm, no logits
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_bfloat16_model_gives_float32_activations_and_means(prompts):
    model = build_model("gemma2").to(torch.bfloat16)
    acts = extract(model, prompts, [1], "t_post_inst", progress=False)
    assert acts.acts.dtype == torch.float32
    v = directions.diff_of_means(acts)
    x = acts.acts.double()
    y = acts.labels.bool()
    torch.testing.assert_close(v.double(), x[y].mean(0) - x[~y].mean(0), atol=1e-6, rtol=1e-6)


def test_cache_hit_resume_and_staleness(prompts, tmp_path, monkeypatch):
    model = build_model("llama")
    fresh = extract(model, prompts, "all", ("t_inst", "t_post_inst"), batch_size=4, progress=False)

    calls = {"n": 0}
    real = activations._forward_batch

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # interrupted during the second batch
        return real(*args)

    monkeypatch.setattr(activations, "_forward_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract(model, prompts, "all", ("t_inst", "t_post_inst"), batch_size=4, cache=tmp_path, progress=False)
    assert len(list(tmp_path.rglob("batch-*.safetensors"))) == 1
    assert not list(tmp_path.rglob(".tmp-*"))

    calls["n"] = 10  # later calls succeed; count how many batches are recomputed
    resumed = extract(model, prompts, "all", ("t_inst", "t_post_inst"), batch_size=4, cache=tmp_path, progress=False)
    n_batches = -(-len(prompts) // 4)
    assert calls["n"] == 10 + n_batches - 1  # the finished batch was read back, the rest recomputed
    torch.testing.assert_close(resumed.acts, fresh.acts)

    hit = extract(model, prompts, "all", ("t_inst", "t_post_inst"), batch_size=4, cache=tmp_path, progress=False)
    assert calls["n"] == 10 + n_batches - 1  # all read back
    torch.testing.assert_close(hit.acts, fresh.acts)

    with torch.no_grad():  # changed weights: the entry is stale and must not be reused
        next(p for n, p in model.named_parameters() if "down_proj" in n).mul_(2.0)
    changed = extract(model, prompts, "all", ("t_inst", "t_post_inst"), batch_size=4, cache=tmp_path, progress=False)
    assert calls["n"] == 10 + 2 * n_batches - 1  # all recomputed
    assert not torch.allclose(changed.acts[:, -1], fresh.acts[:, -1])


def test_save_load_roundtrip_and_where(prompts, tmp_path):
    acts = extract(build_model("qwen2"), prompts, [0, 2], ("t_inst", "t_post_inst"), progress=False)
    path = acts.save(tmp_path / "acts.safetensors")
    back = ActivationSet.load(path)
    assert torch.equal(back.acts, acts.acts) and back.layers == (0, 2) and back.positions == acts.positions
    assert back.prompts.frame.equals(acts.prompts.frame)
    yo = back.where(language="yo", subset="harmful")
    assert len(yo) == 3 and torch.equal(yo.at(2, "t_inst"), acts.acts[acts.prompts.mask(language="yo", subset="harmful"), 1, 0])


def test_length_grouping_reduces_padding():
    lengths = [10, 50, 11, 52, 12, 49, 9, 51]
    def pad(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert pad(length_batches(lengths, 2)) < pad(length_batches(lengths, 2, group_by_length=False))
    ids, mask = left_pad([(5, 6), (7, 8, 9)], pad_id=0)
    assert ids.tolist() == [[0, 5, 6], [7, 8, 9]] and mask.tolist() == [[0, 1, 1], [1, 1, 1]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": [3]}, "out of range"),
        ({"layers": "most"}, "layers must be"),
        ({"positions": ("t_end",)}, "unknown position"),
        ({"positions": ()}, "positions is empty"),
    ],
)
def test_bad_extraction_requests(prompts, kwargs, message):
    model = build_model("qwen2")
    with pytest.raises(ValueError, match=message):
        extract(model, prompts, **{"layers": "all", **kwargs}, progress=False)


def test_empty_and_too_long_prompt_sets(prompts):
    model = build_model("qwen2", max_position_embeddings=64)
    with pytest.raises(ValueError, match="empty"):
        extract(model, prompts.where(language="zz"), progress=False)
    long = data.PromptSet(prompts.frame.assign(text=lambda f: f["text"] + " word" * 80), "long")
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        extract(model, long, progress=False)
