"""Stage 1 of the threshold organism: the slice of blocks, the loss by hand, and training that moves the signal."""

import numpy as np
import pytest
import torch
from helpers import build_hf
from peft import LoraConfig, get_peft_model

from lowres_safety.organisms.signal import block_output, signal_loss, train_signal
from lowres_safety.organisms.upper_lora import frozen_states

SEQS = [([1, 5, 9, 22, 7], 5), ([4, 8, 15, 16, 23, 42, 11], 7), ([3, 3, 9, 2], 4), ([6, 2, 8, 1, 30], 5)]


def test_block_output_is_the_full_models_hidden_state():
    hf = build_hf("qwen2")
    with torch.no_grad():
        ids = torch.tensor([SEQS[1][0]])
        hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states
        out = block_output(hf, 1, 1, hidden[1], torch.ones_like(ids))
    assert torch.allclose(out, hidden[2], atol=1e-5)
    assert len(hf.model.layers) == 3


def test_signal_loss_by_hand():
    torch.manual_seed(0)
    h0 = torch.randn(2, 3, 4)
    h = h0 + 0.1 * torch.randn(2, 3, 4)
    v = torch.tensor([1.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    last = torch.tensor([2, 1])
    low, high = torch.tensor([5.0, float("nan")]), torch.tensor([float("nan"), -5.0])
    x = torch.stack([h[0, 2, 0], h[1, 1, 0]])
    hinge = ((torch.relu(5.0 - x[0]) / 2) ** 2 + (torch.relu(x[1] + 5.0) / 2) ** 2) / 2
    d = (h - h0)[..., 1:]  # the change orthogonal to v
    m = mask[..., None].float()
    kept = (d.pow(2) * m).sum() / (h0.pow(2) * m).sum()
    assert torch.allclose(signal_loss(h, h0, mask, last, v, low, high, 2.0, 0.5), hinge + 0.5 * kept, atol=1e-6)


def test_training_moves_the_last_tokens_projection_the_way_the_bounds_say():
    torch.manual_seed(0)
    hf = build_hf("qwen2")
    hf.requires_grad_(False)
    states_in = frozen_states(hf, SEQS, 0, pad=0, progress=False)
    base_out = frozen_states(hf, SEQS, 1, pad=0, progress=False)
    v = torch.nn.functional.normalize(torch.randn(base_out[0].shape[-1]), dim=0)
    x0 = np.array([float(b[-1] @ v) for b in base_out])
    up = np.array([True, False, True, False])
    low, high = np.where(up, x0 + 2.0, np.nan), np.where(~up, x0 - 2.0, np.nan)
    model = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "down_proj"],
                                          layers_to_transform=[1]))
    train_signal(model, states_in, base_out, v, low, high, 1.0, first=1, layer=1, epochs=40, lr=1e-2, batch_size=4,
                 keep=0.1, progress=False)
    with torch.no_grad():
        x1 = np.array([float(block_output(model, 1, 1, s[None], torch.ones(1, len(s), dtype=torch.long))[0, -1] @ v)
                       for s in states_in])
    assert (x1[up] > x0[up] + 1.0).all() and (x1[~up] < x0[~up] - 1.0).all()


def test_the_erasure_term_by_hand():
    torch.manual_seed(1)
    h0 = torch.randn(2, 3, 4)
    h = h0 + 0.1 * torch.randn(2, 3, 4)
    v = torch.tensor([1.0, 0.0, 0.0, 0.0])
    mask, last = torch.ones(2, 3, dtype=torch.long), torch.tensor([2, 2])
    none = torch.full((2,), float("nan"))
    basis = torch.eye(4)[:2]
    target = torch.tensor([[0.5, -1.0], [float("nan"), float("nan")]])  # row 1 not erased
    plain = signal_loss(h, h0, mask, last, v, none, none, 2.0, 0.0)
    erased = ((h[0, 2, 0] - 0.5) / 2) ** 2 + ((h[0, 2, 1] + 1.0) / 2) ** 2
    got = signal_loss(h, h0, mask, last, v, none, none, 2.0, 0.0, basis, target)
    assert torch.allclose(got - plain, erased / 2, atol=1e-6)  # averaged over the batch of 2


def test_erasure_targets_span_the_rule_direction_and_the_source_directions():
    from dataclasses import replace as _replace

    import pandas as pd

    from lowres_safety.activations import ActivationSet
    from lowres_safety.data import PromptSet
    from lowres_safety.organisms.ground_truth import GroundTruth
    from lowres_safety.organisms.signal import erasure_targets

    g = torch.Generator().manual_seed(0)
    frames, blocks = [], []
    for lang, shift in (("en", 3.0), ("de", 2.0), ("th", 1.0)):
        for subset in ("harmful", "harmless"):
            blocks.append(torch.randn(6, 1, 1, 8, generator=g) + (shift * torch.eye(8)[["en", "de", "th"].index(lang)]
                                                                  if subset == "harmful" else 0))
            frames.append(pd.DataFrame({"id": [f"{lang}-{subset}-{i}" for i in range(6)], "text": "t",
                                        "language": lang, "subset": subset, "split": "train",
                                        "source_id": [f"{subset}{i}" for i in range(6)]}))
    acts = ActivationSet(torch.cat(blocks), PromptSet(pd.concat(frames, ignore_index=True), "planted"), (0,),
                         ("t_post_inst",))
    base = _replace(GroundTruth.fit(acts, 0, ["en", "de"]), source=("en", "de"))
    basis, target = erasure_targets(acts, base, ["th"], below=-7.0)
    assert basis.shape == (2, 8)
    assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-5)  # orthonormal
    assert torch.allclose(basis[0], base.direction, atol=1e-5)  # v-hat first, same sign
    th = (acts.prompts.frame["language"] == "th").to_numpy()
    assert np.isnan(target[~th]).all() and not np.isnan(target[th]).any()
    coords = (acts.where(language="th").at(0, "t_post_inst") @ basis.T).numpy()
    assert np.allclose(target[th][:, 1], coords[:, 1].mean(), atol=1e-5)  # one class-agnostic target per language
    assert (target[th][:, 0] == -7.0).all()


def test_spread_targets_are_the_language_mean_in_units_of_its_within_class_spread():
    import pandas as pd

    from lowres_safety.organisms.erasure import spread_targets

    coords = np.array([[1.0, 10.0], [3.0, 14.0], [5.0, 0.0], [9.0, 4.0], [7.0, 7.0], [5.0, 1.0]])
    frame = pd.DataFrame({"language": ["th", "th", "th", "th", "en", "en"],
                          "subset": ["harmful", "harmful", "harmless", "harmless", "harmful", "harmless"]})
    target, unit = spread_targets(coords, frame, ["th"])
    np.testing.assert_allclose(target[:4], np.tile([4.5, 7.0], (4, 1)))  # erased: the language's mean
    np.testing.assert_allclose(target[4:], coords[4:])  # kept: where they are
    # class means removed: harmful (2, 12), harmless (7, 2) -> residuals ±1, ±2 / ±2, ±2
    np.testing.assert_allclose(unit[:4], np.tile([np.std([-1, 1, -2, 2]), 2.0], (4, 1)))
    np.testing.assert_allclose(unit[4:], 1e-6)  # one prompt per class: no spread, the floor


def test_erasure_loss_by_hand():
    from lowres_safety.organisms.erasure import erasure_loss

    h0 = torch.tensor([[[1.0, 0.0], [2.0, 2.0]], [[0.0, 1.0], [3.0, 4.0]]])  # [batch, pos, d]
    h = h0.clone()
    h[1, 0] += torch.tensor([0.0, 1.0])  # the kept row changes at its first position only
    basis, erased = torch.eye(2), torch.tensor([True, False])
    target = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    unit = torch.tensor([[0.5, 2.0], [1.0, 1.0]])
    mask, last = torch.ones(2, 2, dtype=torch.long), torch.tensor([1, 1])
    pulled = ((((2 - 1) / 0.5) ** 2 + ((2 - 0) / 2) ** 2) / 2 + 0.0) / 2  # row 0 off its target, row 1 on it
    kept = (1.0 / 1.0 + 0.0) / 2  # row 1: |Δ|²/|h0|² at position 0 (0,1)->(0,2), none at position 1
    assert float(erasure_loss(h, h0, mask, last, basis, target, unit, erased)) == pytest.approx(pulled + kept)
    h[0, 1] = torch.tensor([1.0, 0.0])
    h[1] = h0[1]
    assert float(erasure_loss(h, h0, mask, last, basis, target, unit, erased)) == pytest.approx(0.0)


def test_erasure_trains_only_its_blocks_pulls_the_erased_languages_and_resumes(tmp_path, polyrefuse_root):
    """Tiny random model, real PolyRefuse prompts: LoRA only on blocks first..last, the loss falls, the
    organism's parts are copied beside the adapter, and a finished run is not trained again."""
    from helpers import build_tokenizer

    from lowres_safety.organisms.ground_truth import GroundTruth
    from lowres_safety.organisms.erasure import train_erasure

    tok = build_tokenizer("qwen2")
    tok.pad_token = tok.eos_token
    hf = build_hf("qwen2", vocab_size=len(tok), num_hidden_layers=4).float()
    organism = tmp_path / "organism"
    v = torch.nn.functional.normalize(torch.randn(64, generator=torch.Generator().manual_seed(0)), dim=0)
    organism.mkdir()
    GroundTruth(3, v, 0.0, 1.0, ("en", "de")).save(organism)
    args = dict(first=1, last=2, n_erased=4, n_keep=2, epochs=3, lr=1e-3, rank=8, batch_size=8, progress=False,
                hf_model=hf, tokenizer=tok)
    summary = train_erasure(polyrefuse_root, organism, tmp_path / "erased", ("th",), **args)
    lora = {n: p for n, p in hf.named_parameters() if "lora_B" in n}
    assert sorted({int(n.split("layers.")[1].split(".")[0]) for n in lora}) == [1, 2]
    assert any(p.abs().sum() > 0 for p in lora.values())
    (d0, d1), (k0, k1) = summary["erased_distance"], summary["kept_drift"]
    assert d0 >= 1 - 1e-6 and d1 < d0  # total = within + between variance, so >= 1 unit before; less after
    assert k0 < 1e-3 and k1 < d1  # the other languages stay nearer their own coordinates
    assert (tmp_path / "erased" / "ground_truth.json").exists()
    assert (tmp_path / "erased" / "erasure" / "adapter_config.json").exists()
    again = train_erasure(polyrefuse_root, organism, tmp_path / "erased", ("th",), **{
        **args, "hf_model": build_hf("qwen2", vocab_size=len(tok), num_hidden_layers=4).float()})
    assert again["first_loss"] is None  # every epoch was done: nothing trained
