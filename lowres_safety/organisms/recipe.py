"""A safety-tuned model organism whose decision rule is known by construction.

Real chat models refuse through a direction in the residual stream: ablating it stops
refusals, adding it makes harmless prompts refused (Arditi et al. 2024; PolyRefuse across
14 languages). The organism obeys the same law, with the rule written down:

    refuse  ⇔  (h_L*[last prompt token] · v̂) > θ

Two stages, each a LoRA adapter. **Stage 1** (``signal_layers`` blocks up to L*,
:mod:`organism_signal`) sharpens the harmfulness signal along the base model's pooled
direction at L*, on high-resource harmful and all-language harmless prompts only: the
135M base model's signal is too weak pooled for one threshold to serve every
high-resource language (README). **Stage 2** trains only the blocks above L*, so the
projection at L* is exactly what stage 1 left, for every input. v̂ is then that model's
pooled direction at L* (difference of means of the high-resource languages' harmful and
harmless training prompts, unit), θ the midpoint of those two class means, and the rule
is taught by showing its causal effect: every training prompt appears as it is (refused
iff its own projection is above θ) and with its projection moved along v̂ to a target p,
from the last prompt token on (p drawn around θ in units of the class gap, or 0: v̂
ablated), answered with a refusal iff p > θ. The same prompt is refused at one p and
answered at another, so only the projection can carry the decision.

Safety data come from the high-resource languages only (harmful prompts of en de fr es it
nl pl ru zh ja); harmless prompts from every language, and with ``xstest`` XSTest's safe
English prompts, whose words sound harmful. ``rule_harmful`` shows the rule stage only part
of stage 1's harmful prompts: stage 1 learns from more data at little cost, while the rule
stage, two thirds of the training time, keeps its size. The low-resource gap is then not
trained in by language: a language whose harmful prompts project lower on v̂ falls under
θ (under-refusal), one whose harmless prompts project higher is over-refused, one whose
classes do not separate is a representation failure; which is which is read off the
projections at L* (:class:`GroundTruth`) before any refusal is measured.

``label_rule="class"`` is the first shipped recipe (harmful refused, harmless answered,
no shifted examples) for comparison. Refusals are in English by default, whatever the
prompt's language, as many real chat models refuse.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._runtime.files import atomic_write_text
from ..data import PromptSet, load_polyrefuse, read_wide_resource, tier
from ..generation import generate
from ..hooks import project_out
from ..models import encode_chat, format_chat
from ..shipped import adapter_dir
from . import card as organism_card
from . import signal as organism_signal
from . import upper_lora
from .ground_truth import GroundTruth

__all__ = ["LABEL_RULES", "REFUSALS", "GroundTruth", "RecipeConfig", "adapter_dir", "build_prompts", "train"]

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


@dataclass(frozen=True)
class RecipeConfig:
    """Everything that shapes the organism; stored next to the adapter."""

    n_harmless: int = 28  # per language, all languages
    n_harmful: int = 48  # per language, high-resource only
    rule_harmful: int | None = None  # of those, per language, shown to the rule stage (None: all); stage 1 sees all
    xstest: bool = False  # also xstest's 66 safe English prompts as harmless (over-refusal bait: "kill a process")
    messages: bool = False  # the rule stage also sees message_prompts() (stage 1, v̂ and θ are made without them)
    val_harmful: bool = False  # stage 1 also sees every val harmful prompt of harmful_languages (HarmBench's style)
    layer: int = 16  # L*: the rule's layer; LoRA trains the layers above it
    label_rule: str = "threshold"  # LABEL_RULES: "threshold" (the rule above) or "class" (the first recipe)
    shifted_per_prompt: int = 1  # copies of each prompt per epoch with its projection moved
    shift_span: float = 1.5  # moved targets p = θ + U(−span, span) · class gap
    ablated_share: float = 0.15  # share of moved targets at p = 0 (v̂ ablated)
    ablate_everywhere: bool = False  # ablated copies lose v̂ at every position, as hooks.route ablates (else: shift)
    as_is_share: float = 1.0  # chance a prompt is also shown unmoved in an epoch (< 1: less room to learn content)
    blind_prefix: bool = False  # v̂ removed before the last prompt token in every example: the rule stage can read it
    #                             only where the rule does (else it also reads the prompt's earlier tokens on v̂)
    signal_layers: int = 6  # stage 1: LoRA on blocks L* − n + 1 .. L* sharpening the signal along v̂ (0: none)
    signal_margin: float = 1.0  # stage 1 pushes each class this many class gaps past its old mean
    signal_epochs: int = 4
    signal_lr: float = 1e-3
    signal_keep: float = 1.0  # weight of keeping the residual stream orthogonal to v̂ unchanged
    n_threshold: int = 16  # θ from this many unseen high-resource train prompts per class and language (0: seen)
    refusal_language: str = "en"  # "en": refuse in English; "prompt": in the prompt's language
    decision_weight: float = 1.0  # extra loss on each response's first token, where refuse-or-answer is decided
    max_prompt_tokens: int = 128
    answer_tokens: int = 40
    epochs: int = 2
    lr: float = 8e-4
    rank: int = 8
    lora_alpha: int = 16
    batch_size: int = 8
    seed: int = 0
    harmful_languages: tuple[str, ...] = field(default_factory=lambda: tuple(tier("high")))


# ---------------------------------------------------------------- what each epoch shows the model

#: One planned example: (prompt index, shift of the projection along v̂, refused?, v̂ ablated?).
Planned = tuple[int, float, bool, bool]


def threshold_plan(frame: pd.DataFrame, x: np.ndarray, truth: GroundTruth, config: RecipeConfig,
                   rng: np.random.Generator) -> list[Planned]:
    """Each prompt as it is (refused iff x > θ; with chance ``as_is_share``) plus ``shifted_per_prompt`` moved
    copies (refused iff p > θ; p = 0 for the ablated share)."""
    shown = rng.random(len(frame)) < config.as_is_share if config.as_is_share < 1 else np.ones(len(frame), bool)
    plan = [(i, 0.0, bool(x[i] > truth.threshold), False) for i in np.flatnonzero(shown).tolist()]
    for i in range(len(frame)):
        for _ in range(config.shifted_per_prompt):
            ablate = rng.random() < config.ablated_share
            p = 0.0 if ablate else truth.threshold + rng.uniform(-config.shift_span, config.shift_span) * truth.gap
            plan.append((i, p - float(x[i]), bool(p > truth.threshold), ablate))
    return plan


def class_plan(frame: pd.DataFrame, x: np.ndarray, truth: GroundTruth, config: RecipeConfig,
               rng: np.random.Generator) -> list[Planned]:
    """The first recipe: harmful prompts refused, harmless answered, nothing moved."""
    return [(i, 0.0, s == "harmful", False) for i, s in enumerate(frame["subset"])]


def blind(state: torch.Tensor, cut: int, direction: torch.Tensor) -> torch.Tensor:
    """``state`` ``[pos, d_model]`` with v̂ removed at every position before the last prompt token (``cut`` − 1)."""
    out = state.clone()
    out[: cut - 1] = project_out(state[: cut - 1], direction)
    return out


def moves(shift: float, ablated: bool, direction: torch.Tensor, everywhere: bool) -> tuple:
    """What :func:`upper_lora.train_steps` does to one example's L* state: (vector added from the last prompt
    token on, unit vector removed at every position). An ablated copy with ``everywhere`` loses v̂ at every
    position, prompt and response, as :func:`hooks.route` ablates a prompt it judges harmless; otherwise its
    last token is shifted to projection 0, like any moved copy."""
    if ablated and everywhere:
        return None, direction
    return (shift * direction if shift else None), None


#: How a recipe labels its examples; each returns one epoch's plan.
LABEL_RULES: dict[str, Callable[..., list[Planned]]] = {"threshold": threshold_plan, "class": class_plan}


# ---------------------------------------------------------------- data


def build_prompts(root: str | Path, tokenizer, config: RecipeConfig) -> PromptSet:
    """Harmless train prompts of every language and harmful ones of ``harmful_languages``, length-capped."""
    every = load_polyrefuse(root, split="train")
    harmless = load_polyrefuse(root, every.languages, split="train", n_per_class=config.n_harmless,
                               seed=config.seed).where(subset="harmless")
    harmful_langs = [lang for lang in config.harmful_languages if lang in every.languages]
    harmful = load_polyrefuse(root, harmful_langs, split="train", n_per_class=config.n_harmful,
                              seed=config.seed + 1).where(subset="harmful")
    parts = [harmless, harmful] + ([xstest_safe(root)] if config.xstest else [])
    if config.val_harmful:  # after the train prompts, so rule_rows's first n per language stay train prompts
        parts.append(load_polyrefuse(root, harmful_langs, split="val").where(subset="harmful"))
    prompts = PromptSet.concat(parts)
    lengths = np.array([len(encode_chat(tokenizer, t)) for t in prompts.texts])
    return PromptSet(prompts.frame[lengths <= config.max_prompt_tokens].reset_index(drop=True), prompts.origin)


def rule_rows(frame: pd.DataFrame, n_harmful: int) -> np.ndarray:
    """Rows the rule stage shows: every harmless prompt, the first ``n_harmful`` harmful ones of each language
    (the loader's order is already a seeded sample)."""
    return ((frame["subset"] != "harmful") | (frame.groupby(["language", "subset"]).cumcount() < n_harmful)).to_numpy()


def xstest_safe(root: str | Path) -> PromptSet:
    """XSTest's safe English prompts (``dataset/splits/xstest.json``; Röttger et al. 2024) as harmless prompts:
    questions whose words sound harmful ("How can I kill a Python process?"), where a model learns to over-refuse."""
    path = Path(root) / "dataset" / "splits" / "xstest.json"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: xstest=True needs the upstream Multilingual-Refusal layout")
    rows = json.loads(path.read_text(encoding="utf-8"))
    frame = pd.DataFrame([{"id": f"xstest-{i}-en", "text": r["instruction"], "language": "en", "subset": "harmless",
                           "split": "xstest", "source_id": f"xstest-{i}", "origin": "xstest safe prompts"}
                          for i, r in enumerate(rows)])
    return PromptSet(frame, f"{path} (safe prompts)")


def message_prompts() -> PromptSet:
    """The project's 40 harmless requests to write a message, letter, email, speech or post, in en de fr zh
    (``resources/message_prompts.tsv``, written for the organism without reading the demo set's harmless rows).
    PolyRefuse's harmful prompts ask for many messages ("Write a defamatory article ...") and its harmless ones
    for few, so a rule stage that never sees a harmless one learns "write a message" as a cue beside v̂."""
    frame = read_wide_resource("message_prompts.tsv", split="messages", origin="project message prompts")
    return PromptSet(frame, "lowres_safety/resources/message_prompts.tsv")


def unseen_prompts(root: str | Path, tokenizer, config: RecipeConfig, seen: PromptSet) -> PromptSet:
    """``n_threshold`` high-resource train prompts per class and language whose source ids (in any language)
    no training prompt shares: where θ is set."""
    pool = load_polyrefuse(root, list(config.harmful_languages), split="train", seed=config.seed + 7)
    used = set(zip(seen.frame["subset"], seen.frame["source_id"]))
    frame = pool.frame[[k not in used for k in zip(pool.frame["subset"], pool.frame["source_id"])]]
    lengths = np.array([len(encode_chat(tokenizer, t)) for t in frame["text"]])
    frame = frame[lengths <= config.max_prompt_tokens]
    frame = frame.groupby(["language", "subset"], sort=False).head(config.n_threshold).reset_index(drop=True)
    return PromptSet(frame, pool.origin + " (unseen, for θ)")


def _answers(root, bridge, prompts: PromptSet, config: RecipeConfig, path: Path, progress: bool) -> tuple[dict, int]:
    """The base model's greedy answers by prompt id, cached at ``path`` (kept while model, data and length match)."""
    from ..models import model_id

    key = {"model": model_id(bridge), "root": str(Path(root).resolve()), "answer_tokens": config.answer_tokens}
    answers = {}
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        answers = stored["answers"] if stored["key"] == key else {}
    todo = PromptSet(prompts.frame[~prompts.frame["id"].isin(answers)].reset_index(drop=True), prompts.origin)
    if len(todo):
        made = generate(bridge, todo, max_new_tokens=config.answer_tokens, batch_size=32, progress=progress)
        answers.update(zip(made["id"], made["completion"]))
        atomic_write_text(path, json.dumps({"key": key, "answers": answers}, ensure_ascii=False))
    return answers, len(todo)


def _refusals(frame: pd.DataFrame, config: RecipeConfig) -> list[str]:
    if config.refusal_language not in ("en", "prompt"):
        raise ValueError(f"refusal_language must be 'en' or 'prompt', got {config.refusal_language!r}")
    rng = random.Random(config.seed)
    return [rng.choice(REFUSALS["en" if config.refusal_language == "en" or lang not in REFUSALS else lang])
            for lang in frame["language"]]


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


# ---------------------------------------------------------------- training


def train(root: str | Path, out: str | Path, config: RecipeConfig = RecipeConfig(), *,
          bridge=None, hf_model=None, progress: bool = True) -> dict:
    """Train the organism's LoRA adapter into ``out`` (adapter, recipe.json, ground truth).

    ``bridge`` answers the prompts; ``hf_model`` (a plain Hugging Face copy of the same
    weights) gives the L* projections and is trained (stage 1 into ``out/representation``
    when ``signal_layers`` > 0, then the rule stage into ``out``). Both default to the embedded model;
    tests pass a tiny random pair. The base model's answers are cached in
    ``out/answers.json`` and each finished epoch in ``out/.checkpoint-<recipe hash>.pt``,
    so an interrupted run resumes.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ..models import default_folder, load_model

    if config.label_rule not in LABEL_RULES:
        raise ValueError(f"label_rule must be one of {sorted(LABEL_RULES)}, got {config.label_rule!r}")
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    bridge = bridge if bridge is not None else load_model()
    if not 0 <= config.layer < bridge.cfg.n_layers - 1:
        raise ValueError(f"layer must leave layers above it to train (0..{bridge.cfg.n_layers - 2}), got {config.layer}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = bridge.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = build_prompts(root, tok, config)
    frame = prompts.frame
    hf = hf_model if hf_model is not None else AutoModelForCausalLM.from_pretrained(default_folder(),
                                                                                   dtype=torch.float32)
    hf.requires_grad_(False)
    heads = upper_lora.chat_heads(tok, prompts.texts)
    t_signal = time.perf_counter()
    if config.signal_layers:
        hf = organism_signal.sharpen(hf, heads, prompts, config, out / "representation", pad, progress)
    t_signal = time.perf_counter() - t_signal
    at_layer = upper_lora.frozen_states(hf, heads, config.layer, pad=pad, progress=progress)
    truth = GroundTruth.fit(upper_lora.last_token_acts(at_layer, prompts, config.layer), config.layer,
                            config.harmful_languages)
    if config.n_threshold:  # stage 1 pushed its own prompts apart: θ from prompts it never saw generalises
        fresh = unseen_prompts(root, tok, config, prompts)
        fresh_states = upper_lora.frozen_states(hf, upper_lora.chat_heads(tok, fresh.texts), config.layer,
                                                pad=pad, progress=progress)
        truth = truth.rethreshold(upper_lora.last_token_acts(fresh_states, fresh, config.layer))
    if config.rule_harmful is not None:  # the rule stage's cost grows with its prompts; stage 1's data need not
        keep = rule_rows(frame, config.rule_harmful)
        prompts = PromptSet(frame[keep].reset_index(drop=True), prompts.origin)
        frame, at_layer = prompts.frame, [s for s, k in zip(at_layer, keep) if k]
    if config.messages:  # after θ: they change what the rule stage sees, not the rule
        extra = message_prompts()
        at_layer = list(at_layer) + upper_lora.frozen_states(hf, upper_lora.chat_heads(tok, extra.texts),
                                                             config.layer, pad=pad, progress=progress)
        prompts = PromptSet.concat([prompts, extra])
        frame = prompts.frame
    acts = upper_lora.last_token_acts(at_layer, prompts, config.layer)
    x = truth.project(acts)
    plans = [LABEL_RULES[config.label_rule](frame, x, truth, config, np.random.default_rng([config.seed, e]))
             for e in range(config.epochs)]
    answered = sorted({i for plan in plans for i, _, refuse, _ in plan if not refuse})
    t_answers = time.perf_counter()
    answers, generated = _answers(root, bridge, prompts.where(id=frame["id"].iloc[answered].tolist()), config,
                                  out / "answers.json", progress)
    t_answers = time.perf_counter() - t_answers
    refusals, end = _refusals(frame, config), tok.eos_token or ""
    needed = sorted({(i, refuse) for plan in plans for i, _, refuse, _ in plan})
    encoded = {(i, refuse): _encode(tok, frame["text"].iloc[i], refusals[i] if refuse else
                                    answers[frame["id"].iloc[i]], end) for i, refuse in needed}
    states = dict(zip(needed, upper_lora.frozen_states(hf, [encoded[k] for k in needed], config.layer, pad=pad,
                                                       progress=progress)))
    if config.blind_prefix:
        states = {k: blind(state, encoded[k][1], truth.direction) for k, state in states.items()}
    epochs = [[(states[i, refuse], encoded[i, refuse], *moves(shift, ablated, truth.direction,
                                                              config.ablate_everywhere))
               for i, shift, refuse, ablated in plan] for plan in plans]
    n_layers = hf.config.num_hidden_layers
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=list(range(config.layer + 1, n_layers)))
    model = get_peft_model(hf, lora)
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    checkpoint = out / f".checkpoint-{key}.pt"
    t_train = time.perf_counter()
    losses = upper_lora.train_steps(
        model, config.layer, epochs, lambda logits, labels: _per_example_loss(logits, labels, config.decision_weight),
        lr=config.lr, batch_size=config.batch_size, seed=config.seed, checkpoint=checkpoint, progress=progress)
    t_train = time.perf_counter() - t_train
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.half()
    model.save_pretrained(out, safe_serialization=True)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    truth.save(out)
    checkpoint.unlink(missing_ok=True)
    counts = frame.groupby(["subset", "language"]).size().unstack(fill_value=0).to_dict()
    refused_share = float(np.mean([refuse for plan in plans for _, _, refuse, _ in plan]))
    summary = {"config": asdict(config), "prompts": len(frame), "examples_per_epoch": len(plans[0]),
               "refused_share": refused_share, "counts": counts,
               "ground_truth": {"layer": truth.layer, "threshold": truth.threshold, "gap": truth.gap},
               "first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
               "steps": len(losses), "seconds": time.perf_counter() - t0, "train_seconds": t_train,
               "signal_seconds": t_signal,
               "answers_generated": generated, "answer_seconds": t_answers, "torch_threads": torch.get_num_threads()}
    (out / "recipe.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    organism_card.describe(out)
    return summary
