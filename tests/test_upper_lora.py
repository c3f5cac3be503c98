"""Training above a layer from cached states: equal to the full model, and resumable without a trace."""

import pytest
import torch
from helpers import build_hf
from peft import LoraConfig, get_peft_model

from lowres_safety.organisms.upper_lora import _collate, frozen_states, only_layers_above, train_steps

SEQS = [([1, 5, 9, 22, 7], 3), ([4, 8, 15, 16, 23, 42, 11], 4), ([3, 3, 9, 2], 2)]


def test_cached_states_and_the_upper_layers_reproduce_the_full_forward_pass():
    hf = build_hf("qwen2")
    states = frozen_states(hf, SEQS, 1, pad=0, progress=False)
    with torch.no_grad():
        for (ids, _), state in zip(SEQS, states):
            full = hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
            assert torch.allclose(state, full.hidden_states[2][0], atol=1e-6)
            with only_layers_above(hf, 1):
                assert len(hf.model.layers) == 1
                assert torch.allclose(hf(inputs_embeds=state[None]).logits, full.logits, atol=1e-5)
    assert len(hf.model.layers) == 3  # restored


def _lora(seed=0):
    torch.manual_seed(seed)
    hf = build_hf("qwen2")
    hf.requires_grad_(False)
    return get_peft_model(hf, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"],
                                         layers_to_transform=[2], init_lora_weights="gaussian"))


def _loss(logits, labels):
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    states = frozen_states(build_hf("qwen2"), SEQS, 1, pad=0, progress=False)
    delta = torch.randn(states[0].shape[-1])
    epochs = [[(s, q, delta if i == 0 else None, None) for i, (s, q) in enumerate(zip(states, SEQS))]] * 3
    straight = _lora()
    losses = train_steps(straight, 1, epochs, _loss, lr=1e-2, batch_size=2, progress=False)
    calls = []

    def stops_in_the_third_epoch(logits, labels):
        calls.append(1)
        if len(calls) == 5:  # 2 batches an epoch: the third epoch's first batch
            raise KeyboardInterrupt
        return _loss(logits, labels)

    with pytest.raises(KeyboardInterrupt):
        train_steps(_lora(), 1, epochs, stops_in_the_third_epoch, lr=1e-2, batch_size=2,
                    checkpoint=tmp_path / "c.pt", progress=False)
    resumed = _lora(seed=1)  # fresh weights: everything must come from the checkpoint
    again = train_steps(resumed, 1, epochs, _loss, lr=1e-2, batch_size=2, checkpoint=tmp_path / "c.pt",
                        progress=False)
    assert len(again) == len(losses) == 6 and torch.allclose(torch.tensor(again), torch.tensor(losses), atol=1e-5)
    a = {n: p for n, p in straight.named_parameters() if p.requires_grad}
    for n, p in resumed.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, a[n], atol=1e-5), n


def test_collate_adds_from_the_last_prompt_token_and_ablates_at_every_position():
    states = frozen_states(build_hf("qwen2"), SEQS, 1, pad=0, progress=False)
    d = states[0].shape[-1]
    v = torch.nn.functional.normalize(torch.randn(d), dim=0)
    x, mask, labels = _collate([(states[0], SEQS[0], 3 * v, None), (states[1], SEQS[1], None, v),
                                (states[2], SEQS[2], None, None)])
    (ids0, cut0), (ids1, _), (ids2, _) = SEQS
    assert torch.allclose(x[0, : cut0 - 1], states[0][: cut0 - 1])  # before the last prompt token: untouched
    assert torch.allclose(x[0, cut0 - 1 : len(ids0)], states[0][cut0 - 1 :] + 3 * v, atol=1e-6)
    assert torch.allclose(x[1, : len(ids1)] @ v, torch.zeros(len(ids1)), atol=1e-5)  # no v̂ left anywhere
    rest = states[1] - (states[1] @ v)[:, None] * v
    assert torch.allclose(x[1, : len(ids1)], rest, atol=1e-5)  # and nothing else changed
    assert torch.allclose(x[2, : len(ids2)], states[2]) and mask.sum(1).tolist() == [5, 7, 4]
    assert labels[0, :cut0].eq(-100).all() and labels[0, cut0:5].tolist() == ids0[cut0:]
