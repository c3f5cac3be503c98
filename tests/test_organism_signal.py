"""Stage 1 of the threshold organism: the slice of blocks, the loss by hand, and training that moves the signal."""

import numpy as np
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


def test_the_shipped_stage_one_still_matches_its_key(polyrefuse_root):
    """``organism train --reuse organism`` must find the shipped stage 1 finished, not retrain it (28 min):
    the key of a stage 1 made before the stage-1 erasure was removed is unchanged."""
    import dataclasses
    import json

    from transformers import AutoTokenizer

    from lowres_safety.models import default_folder
    from lowres_safety.organisms.recipe import RecipeConfig, build_prompts
    from lowres_safety.organisms.signal import stage_key
    from lowres_safety.shipped import adapter_dir

    folder = adapter_dir()
    saved = json.loads((folder / "recipe.json").read_text())["config"]
    assert saved["erased_languages"] == []  # made when the setting still existed
    names = {f.name for f in dataclasses.fields(RecipeConfig)}
    config = RecipeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})
    prompts = build_prompts(polyrefuse_root, AutoTokenizer.from_pretrained(default_folder()), config)
    assert stage_key(config, prompts) == json.loads((folder / "representation" / "stage.json").read_text())["key"]
