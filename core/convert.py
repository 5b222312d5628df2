"""A GGUF source model's weights into one Hugging Face `.safetensors` file, one tensor at a time.

transformers reads a GGUF itself (`from_pretrained(gguf_file=…)`), but it dequantises every tensor to float32 and
holds them all until the model is built: about 4 bytes a parameter, 28 GB for a 7B, before anything is written.
Here the safetensors header is written first — every tensor's name, type and shape is known from the GGUF's own
header — and each tensor is then dequantised, put back into the Hugging Face layout by transformers' own
per-architecture processor (Llama's Q/K row permutation, Gemma's norm offset of 1) and appended, large matrices a
block of rows at a time. Memory holds one block, not the model (`benchmarks/convert_memory.py` measures it).

The configuration is transformers' reading of the GGUF header, completed with what it leaves out or replaces by the
family's defaults (`source_config`): head_dim, soft-capping values, the sliding-window layers and their RoPE base,
and Llama 3's RoPE scaling, which a GGUF keeps only as one divisor per rotated pair (`rope_freqs`).

Types: a GGUF's F32 and F16 matrices keep their type; quantised and BF16 ones become BF16, the type every supported
family is released in (rounding moves a weight by at most 2⁻⁹ of itself, far below the step of the 4- to 8-bit
quantisation it already carries); vectors (norms, biases) stay float32.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import TweetyError
from core.jobs import Reporter

_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


@dataclass(frozen=True)
class _Planned:
    tensor: object  # gguf.ReaderTensor
    name: str  # the Hugging Face name
    dtype: str  # F32 | F16 | BF16
    shape: tuple[int, ...]  # the Hugging Face (row-major) shape

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _BYTES[self.dtype]


def _plan(reader, names: dict[str, str]) -> list[_Planned]:
    from gguf import GGMLQuantizationType as Q

    plan = []
    for t in reader.tensors:
        if t.name not in names:  # e.g. Llama 3's rope_freqs: transformers computes it from the config
            continue
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dimensions fastest first
        dtype = "F32" if len(shape) == 1 or t.tensor_type == Q.F32 else "F16" if t.tensor_type == Q.F16 else "BF16"
        plan.append(_Planned(t, names[t.name], dtype, shape))
    return plan


CHUNK_VALUES = 1 << 22  # rows are dequantised this many values at a time (16 MB of float32)
_WHOLE = (".attn_q.", ".attn_k.")  # tensors a processor rearranges across rows (Llama's Q/K permutation)


def write_weights(reader, architecture: str, config, out_file: Path, report: Reporter | None = None) -> int:
    """Write the tensors of `reader` (a `gguf.GGUFReader`), in the layout of the transformers model `config`
    describes, to `out_file`; returns the number of tensors. `architecture` is the GGUF's `general.architecture`
    (it picks the processor). Large matrices are dequantised a block of rows at a time, so even a 262k-row
    embedding never exists in float32 whole; the GGUF pages read are handed back to the system as we go (they are
    the file's, but would otherwise count in the process's memory)."""
    import torch
    from gguf import dequantize
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    settings = config.to_dict()
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=settings)
    with torch.device("meta"):  # names only: no memory for the weights
        skeleton = AutoModelForCausalLM.from_config(config)
    plan = _plan(reader, get_gguf_hf_weights_map(skeleton, processor))
    del skeleton
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for p in plan:
        header[p.name] = {"dtype": p.dtype, "shape": list(p.shape), "data_offsets": [offset, offset + p.nbytes]}
        offset += p.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data on 8 bytes
    types = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    with open(out_file, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for i, p in enumerate(plan):
            if report is not None:
                report(i, len(plan), f"converting {p.name}")
            t, written = p.tensor, 0
            whole = len(p.shape) == 1 or any(s in t.name for s in _WHOLE)
            step = p.shape[0] if whole else max(1, CHUNK_VALUES // int(np.prod(p.shape[1:])))
            for row in range(0, p.shape[0], step):
                weights = processor.process(
                    weights=dequantize(t.data[row : row + step], t.tensor_type),
                    name=t.name,
                    tensor_key_mapping={},
                    parsed_parameters={"config": settings},
                ).weights
                tensor = torch.from_numpy(np.require(weights, np.float32, ["C", "W"])).reshape(-1, *p.shape[1:])
                data = tensor.to(types[p.dtype]).contiguous().view(torch.uint8).numpy()
                f.write(data.data)
                written += data.nbytes
            if written != p.nbytes:  # the header promised this size: never leave a file it would misdescribe
                raise ValueError(f"tensor {t.name} has {written} bytes, expected {p.nbytes}")
            _release(reader, t)
    return len(plan)


def _release(reader, tensor) -> None:
    """Drop the GGUF pages of `tensor` from this process (they are clean file pages: read again if ever needed)."""
    import mmap

    mapped = getattr(reader.data, "_mmap", None)
    if mapped is None or not hasattr(mapped, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return  # Windows: no madvise; the pages stay until the reader is closed
    start = tensor.data_offset - tensor.data_offset % mmap.PAGESIZE
    mapped.madvise(mmap.MADV_DONTNEED, start, tensor.data_offset + tensor.n_bytes - start)


# --- the configuration ----------------------------------------------------------------------------------------------


def llama3_rope_factors(dim: int, theta: float, factor: float, low: float, high: float, context: float) -> list[float]:
    """Llama 3.x's RoPE scaling as llama.cpp takes it (`rope_freqs`): each rotated pair's frequency is divided by its
    factor — 1 for the high frequencies, `factor` for the low ones, a smooth blend between (the formula of
    transformers' `_compute_llama3_parameters`)."""
    factors = []
    for i in range(0, dim, 2):
        wavelength = 2 * math.pi * theta ** (i / dim)
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def llama3_rope_parameters(factors: list[float], dim: int, theta: float, path: Path) -> dict:
    """The llama3 `rope_parameters` that give these `rope_freqs` divisors. Only the ratios of the original context
    to the two frequency factors matter, so the low factor is taken as 1 and the blend band's divisors fix the other
    two (a line in 1 / wavelength); with fewer than two pairs in the band, Meta's high factor 4 is assumed. The
    result is checked against every divisor."""
    f = np.asarray(factors, dtype=np.float64)
    factor = float(f.max())
    inv_wave = 1 / (2 * np.pi * theta ** (np.arange(0, dim, 2) / dim))
    band = (f > 1 + 1e-6) & (f < factor - 1e-6)
    smooth = (1 / f[band] - 1 / factor) / (1 - 1 / factor)  # = context / wavelength − 1, over (high − 1)
    if band.sum() >= 2:
        slope, intercept = np.polyfit(inv_wave[band], smooth, 1)
        high = 1 - 1 / intercept
        context = -slope / intercept
    elif band.sum() == 1:
        high = 4.0
        context = float((smooth[0] * (high - 1) + 1) / inv_wave[band][0])
    else:  # between the shortest unscaled and the longest scaled wavelength
        high = 4.0
        context = math.sqrt(high / inv_wave[f <= 1 + 1e-6].min() / inv_wave[f >= factor - 1e-6].max())
    rope = dict(
        rope_type="llama3",
        rope_theta=theta,
        factor=factor,
        low_freq_factor=1.0,
        high_freq_factor=float(high),
        original_max_position_embeddings=int(round(context)),
    )
    again = llama3_rope_factors(dim, theta, factor, 1.0, float(high), float(round(context)))
    if not np.allclose(again, f, rtol=1e-4):
        raise TweetyError(
            "this GGUF's RoPE frequency factors (rope_freqs) are not Llama 3's scaling",
            path=path,
            fix="convert the model from its Hugging Face folder instead",
        )
    return rope


def source_config(gguf: Path, reader, architecture: str, gemma_big_layers: tuple[int, ...] = ()):
    """transformers' configuration of a GGUF, completed from the header's own keys (see the module docstring).
    `gemma_big_layers`: the depths at which llama.cpp scales a Gemma's queries by 1/√(hidden/heads), not by
    1/√head_dim."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def key(name: str):
        field = reader.fields.get(f"{architecture}.{name}")
        return None if field is None else field.contents()

    c = config.to_dict()
    if key("attention.key_length") is not None:
        c["head_dim"] = int(key("attention.key_length"))
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):
        if key(name) is not None:
            c[name] = float(key(name))
    if architecture.startswith("gemma"):
        big = c["num_hidden_layers"] in gemma_big_layers
        c["query_pre_attn_scalar"] = c["hidden_size"] // c["num_attention_heads"] if big else c["head_dim"]
    if key("attention.sliding_window") is not None:
        c["sliding_window"] = int(key("attention.sliding_window"))
    pattern = key("attention.sliding_window_pattern")
    if isinstance(pattern, list) and architecture == "gemma3":
        c["layer_types"] = ["sliding_attention" if s else "full_attention" for s in pattern]
    local_base = key("rope.freq_base_swa")
    if local_base is not None and "sliding_attention" in (c.get("rope_parameters") or {}):
        c["rope_parameters"]["sliding_attention"] = dict(rope_type="default", rope_theta=float(local_base))
    freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if freqs is not None and architecture == "llama":
        theta = float(key("rope.freq_base") or 10000.0)
        c["rope_parameters"] = llama3_rope_parameters(
            list(map(float, freqs.data)), c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], theta, gguf
        )
    return type(config).from_dict(c)
