import pytest
import torch
from helpers import FAMILIES, build_model, build_tokenizer
from transformers import AutoModelForCausalLM

from lowres_safety.models import (
    default_folder,
    encode_chat,
    format_chat,
    position_offset,
    show_tokens,
    weights_fingerprint,
)

INSTRUCTION = "How do I bake bread at home?"


def _template_ids(tok, instruction, system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ids_equal_the_tokenizers_own_chat_template(family):
    tok = build_tokenizer(family)
    prompt = encode_chat(tok, INSTRUCTION)
    assert list(prompt.ids) == _template_ids(tok, INSTRUCTION)
    # no BOS added on top of the one the template text carries
    text = format_chat(tok, INSTRUCTION)
    assert prompt.ids.count(tok.bos_token_id) == text.count(tok.bos_token)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_t_inst_is_the_last_instruction_token(family):
    tok = build_tokenizer(family)
    prompt = encode_chat(tok, INSTRUCTION)
    tokens = tok.convert_ids_to_tokens(list(prompt.ids))
    assert tokens[prompt.t_inst] == "?"  # the instruction ends in '?', a token of its own here
    suffix = tok.convert_tokens_to_string(tokens[prompt.t_inst + 1 :])
    assert INSTRUCTION not in suffix and "?" not in suffix
    assert tok.convert_tokens_to_string(tokens[: prompt.t_inst + len(tokens) + 1]).rstrip().endswith(INSTRUCTION)


def test_default_template_positions_and_system_prompt():
    tok = build_tokenizer("qwen2")
    plain = encode_chat(tok, INSTRUCTION)
    with_system = encode_chat(tok, INSTRUCTION, system="You are terse.")
    assert len(with_system) > len(plain)
    assert plain.t_inst == with_system.t_inst  # counted from the end: the suffix is the same
    assert position_offset(plain, "t_post_inst") == -1
    assert position_offset(plain, "t_inst") == plain.t_inst
    assert position_offset(plain, "t_inst-2") == plain.t_inst - 2
    assert position_offset(plain, -3) == -3


def test_gemma_system_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match="system"):
        encode_chat(build_tokenizer("gemma2"), INSTRUCTION, system="Be brief.")


@pytest.mark.parametrize("spec", ["t_last", "inst", "t_inst+x", 0, 5])
def test_unknown_or_impossible_position_is_an_error(spec):
    with pytest.raises(ValueError, match="position"):
        position_offset(encode_chat(build_tokenizer(), INSTRUCTION), spec)


def test_position_before_the_prompt_start_is_an_error():
    prompt = encode_chat(build_tokenizer(), INSTRUCTION)
    with pytest.raises(ValueError, match="outside"):
        position_offset(prompt, -len(prompt) - 1)


def test_show_tokens_marks_both_positions(default_model):
    table = show_tokens(default_model, INSTRUCTION)
    assert table.loc[table["mark"] == "t_post_inst", "from_end"].item() == -1
    assert table.loc[table["mark"] == "t_inst", "token"].item() == "?"


def _resid_post(model, ids):
    store = {}

    def grab(layer):
        def fn(act, hook):
            store[layer] = act.detach().clone()
            return act
        return fn

    with model.hooks(fwd_hooks=[(f"blocks.{l}.hook_resid_post", grab(l)) for l in range(model.cfg.n_layers)]):
        model(ids)
    return store


def _hf_block_outputs(hf, ids):
    """Residual stream after each decoder layer (pre final norm), from HF's own modules."""
    outs = {}
    handles = [
        layer.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, (o[0] if isinstance(o, tuple) else o).detach()))
        for k, layer in enumerate(hf.model.layers)
    ]
    try:
        hidden = hf(ids, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    return outs, hidden


@pytest.mark.parametrize("family", list(FAMILIES))
def test_resid_post_is_hf_hidden_states_on_tiny_models(family):
    model, reference = build_model(family, keep_reference=True)
    ids = torch.tensor([encode_chat(model.tokenizer, INSTRUCTION).ids])
    ours = _resid_post(model, ids)
    outs, hidden = _hf_block_outputs(reference, ids)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(ours[layer], outs[layer], atol=1e-5, rtol=1e-5)
        if layer < model.cfg.n_layers - 1:  # HF's last hidden state has the final norm applied
            torch.testing.assert_close(ours[layer], hidden[layer + 1], atol=1e-5, rtol=1e-5)


def test_resid_post_is_hf_hidden_states_on_default_model(default_model):
    reference = AutoModelForCausalLM.from_pretrained(default_folder(), dtype=torch.float32).eval()
    ids = torch.tensor([encode_chat(default_model.tokenizer, INSTRUCTION).ids])
    ours = _resid_post(default_model, ids)
    outs, hidden = _hf_block_outputs(reference, ids)
    for layer in range(default_model.cfg.n_layers):
        torch.testing.assert_close(ours[layer], outs[layer], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(ours[5], hidden[6], atol=1e-3, rtol=1e-4)


def test_fingerprint_changes_with_any_weight_matrix():
    model = build_model("llama")
    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "layers.1." in n and "down_proj" in n).add_(0.01)
    assert weights_fingerprint(model) != before


def test_device_map_loads_the_same_model_and_hooks_fire(tmp_path, monkeypatch):
    """``device_map`` (accelerate's placement) reaches Hugging Face's loader and gives the same activations,
    with live hooks, as a plain load."""
    from lowres_safety.activations import extract
    from lowres_safety.data import load_builtin
    from lowres_safety.models import load_model

    tok = build_tokenizer("qwen2")
    tok.pad_token = tok.eos_token
    from helpers import build_hf

    build_hf("qwen2", vocab_size=len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    asked = []
    loader = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        asked.append(kwargs.get("device_map"))
        return loader(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    plain, placed = load_model(str(tmp_path)), load_model(str(tmp_path), device_map={"": "cpu"})
    assert asked == [None, {"": "cpu"}]
    prompts = load_builtin(["en"], n_per_class=2)
    a, b = (extract(m, prompts, [0, 2], ("t_post_inst",), progress=False).acts for m in (plain, placed))
    torch.testing.assert_close(a, b)
    assert placed.cfg.device == "cpu"


def test_the_library_deprecation_peft_triggers_on_first_load_is_not_printed():
    """Catches: the FutureWarning transformers raises when peft reads ``is_gradient_checkpointing`` (the organism's
    first load) reaching the main job's terminal. Run in a fresh interpreter: pytest resets warning filters."""
    import subprocess
    import sys

    code = ("import lowres_safety\n"
            "from transformers import LlamaConfig, AutoModelForCausalLM\n"
            "m = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=8,"
            " num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))\n"
            "m.is_gradient_checkpointing\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "is_gradient_checkpointing" not in out.stderr
