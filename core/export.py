"""GGUF export of an adapted model (the families of core.models.FAMILIES), for llama.cpp and the tools built on it.

Everything is checked before a byte is written: architecture, tokenizer, safetensors headers, and that the
vocabulary, the embedding table and the head agree. Tensors are then streamed one at a time from the safetensors
files (memory stays near one tensor, even for a 7B model) into a temporary file renamed into place at the end.

llama.cpp conventions followed (gguf-py and llama.cpp's convert_hf_to_gguf.py; the per-architecture differences are
one table, `ARCHITECTURES`, below):
- Arch `llama` (Llama, Mistral): Q and K rows are permuted from the Hugging Face rotate-half layout to llama.cpp's
  interleaved RoPE layout. Qwen and Gemma use the NeoX (rotate-half) layout in llama.cpp too: no permutation.
- Llama 3.x RoPE scaling (`rope_type: llama3`) becomes a `rope_freqs.weight` tensor of per-frequency divisors.
- Gemma's RMSNorm scales by (1 + w), llama.cpp's by w: every Gemma norm weight is written plus one. Gemma's embedding
  scale (×√hidden) is built into llama.cpp; its soft-capping, sliding-window layers and local RoPE base are keys.
- Tied embeddings: no `output.weight`; llama.cpp then uses `token_embd.weight` for the head.
- The vocabulary is the SentencePiece model (`tokenizer.ggml.model = "llama"`), with scores and piece types. llama.cpp
  segments it by merging the best-scoring adjacent pair first — SentencePiece's BPE algorithm — so a BPE vocabulary
  tokenizes exactly as in training; a unigram vocabulary is exported too, with a warning, since there it differs.
- A byte-level BPE vocabulary (a source vocabulary extended by core.extend: SmolLM2, Llama 3) is written as llama.cpp
  writes GPT-2-style vocabularies (`tokenizer.ggml.model = "gpt2"`): tokens, types, merges, and `tokenizer.ggml.pre`,
  the name of llama.cpp's pre-tokenizer for the source model (recorded when the vocabulary was extended).

Why one module of ~700 lines: the architecture table, the vocabulary readers and the writer are the three parts of
one plan (`Plan`) that must agree tensor by tensor and id by id; core.hydra builds its merged-vocabulary plan from the
same public pieces (`tensor_plan`, `Plan`, `write_plan`). It reads top to bottom in that order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.convert import llama3_rope_factors
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_file
from core.layout import PROJECT_FILE
from core.models import (
    DEFAULT_MODEL,
    SAFETENSORS_DTYPES,
    StoredTensor,
    family,
    safetensors_headers,
    tied_embeddings,
    weight_files,
)
from core.resources import read_json
from core.tokenizer import adds_bos

log = logging.getLogger(__name__)

TYPES = ("f32", "f16", "q8_0")
_SKIPPED = (".rotary_emb.inv_freq",)  # buffers some old checkpoints saved; llama.cpp recomputes them


# --- HF → GGUF: tensor names and what each architecture needs (the one place that knows) ---------------------------

GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
ROPE_FREQS = "rope_freqs.weight"  # Llama 3.x RoPE scaling: one divisor per rotated pair
_LLAMA_BLOCK = {  # after `model.layers.N.` → after `blk.N.`
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_QKV_BIASES = {
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
}
_QK_NORMS = {"self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight"}
_GEMMA_NORMS = {  # Gemma 2/3 norm both sides of attention and of the MLP
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


@dataclass(frozen=True)
class Architecture:
    """How llama.cpp stores one architecture (`general.architecture`), as far as it differs from `llama`."""

    name: str
    block: dict[str, str]  # every layer's tensors: HF name after `model.layers.N.` → GGUF name after `blk.N.`
    activation: str = "silu"  # the MLP activation llama.cpp hard-codes for the architecture
    permute_qk: bool = False  # `llama` ropes interleaved pairs; NeoX-style architectures rope halves, as HF does
    norm_offset: float = 0.0  # added to every norm weight (Gemma: llama.cpp scales by w where HF scales by 1 + w)
    reads_head: bool = True  # False: llama.cpp always uses token_embd as the head (Gemma 2), so it must be tied
    attn_softcapping: bool = False  # attention soft-capping (Gemma 2 requires it)
    final_softcapping: bool = False  # final-logit soft-capping key read (Gemma 2 requires it, Gemma 3 optional)
    sliding_window: bool = False  # sliding-window layers: window, per-layer pattern, local RoPE base (Gemma 2/3)


ARCHITECTURES = {
    a.name: a
    for a in (
        Architecture("llama", _LLAMA_BLOCK, permute_qk=True),
        Architecture("qwen2", {**_LLAMA_BLOCK, **_QKV_BIASES}),
        Architecture("qwen3", {**_LLAMA_BLOCK, **_QK_NORMS}),
        Architecture(
            "gemma2",
            {**_LLAMA_BLOCK, **_GEMMA_NORMS},
            activation="gelu_pytorch_tanh",
            norm_offset=1.0,
            reads_head=False,
            attn_softcapping=True,
            final_softcapping=True,
            sliding_window=True,
        ),
        Architecture(
            "gemma3",
            {**_LLAMA_BLOCK, **_GEMMA_NORMS, **_QK_NORMS},
            activation="gelu_pytorch_tanh",
            norm_offset=1.0,
            final_softcapping=True,
            sliding_window=True,
        ),
    )
}


def architecture(config: dict, path: Path | None = None) -> Architecture:
    """The GGUF architecture of a model's config.json (a TweetyError for an unsupported family)."""
    return ARCHITECTURES[family(config, path).gguf_arch]


@dataclass(frozen=True)
class ExportSettings:
    type: str = "f16"  # f32 | f16 | q8_0
    name: str | None = None  # general.name; default: the model folder's name
    languages: tuple[str, ...] = ()  # general.languages, e.g. ("es",); default: from project.json
    overwrite: bool = False  # replace an existing file at the destination


@dataclass(frozen=True)
class ExportResult:
    path: Path
    type: str
    bytes: int
    tensors: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    handoff: object | None = None  # core.handoff.HandOffResult: the model card and Modelfile written beside the file


@dataclass(frozen=True)
class _Tensor:
    hf_name: str
    gguf_name: str
    stored: StoredTensor | None  # None: a tensor computed from the config (`values`)
    permute_heads: int = 0  # Q/K: number of heads to permute by
    more_rows: tuple[StoredTensor, ...] = ()  # stacked below `stored` (a Hydra's merged vocabulary tables)
    offset: float = 0.0  # added to every value (Gemma's norms)
    values: tuple[float, ...] = ()  # a computed 1-D tensor (Llama 3's rope_freqs)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.stored is None:
            return (len(self.values),)
        if self.more_rows:
            return (sum(s.shape[0] for s in (self.stored, *self.more_rows)), *self.stored.shape[1:])
        return self.stored.shape

    @property
    def file(self) -> Path | None:
        return None if self.stored is None else self.stored.file


@dataclass
class Plan:
    config: dict
    tensors: list[_Tensor]
    pieces: list[tuple[str, float, int]]  # (piece, score, gguf token type)
    is_bpe: bool
    add_space_prefix: bool
    special_ids: dict[str, int]
    add_bos: bool
    chat_template: str | None
    metadata: dict[str, str] = field(default_factory=dict)  # extra string keys (a Hydra's language offsets)
    merges: list[str] = field(default_factory=list)  # byte-level BPE only: "left right", in rank order
    pre: str | None = None  # byte-level BPE only: llama.cpp's pre-tokenizer name (None: a SentencePiece vocabulary)


def export_gguf(
    model_dir: str | Path,
    out_file: str | Path,
    settings: ExportSettings = ExportSettings(),
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> ExportResult:
    """Write `model_dir` (an adapted HF model folder) as one GGUF file."""
    start = time.monotonic()
    model_dir, out_file = Path(model_dir), Path(out_file)
    report = Reporter(progress, cancel, "Exporting GGUF")
    if settings.type not in TYPES:
        raise TweetyError(f"unknown GGUF type {settings.type!r}", fix="choose f32, f16 or q8_0")
    if out_file.exists() and not settings.overwrite:
        raise TweetyError(
            "the destination file exists; Tweety Studio never overwrites your files",
            path=out_file,
            fix="choose another file name (or confirm replacing it)",
        )
    if out_file.suffix.lower() != ".gguf":
        raise TweetyError("the destination should end in .gguf", path=out_file, fix="name the file like model.gguf")
    return write_plan(_plan(model_dir), model_dir, out_file, settings, report, start)


def write_plan(
    plan: Plan, model_dir: Path, out_file: Path, settings: ExportSettings, report: Reporter, start: float
) -> ExportResult:
    """Write a checked plan (from `_plan`, or core.hydra's merged-vocabulary plan) as one GGUF file, atomically."""
    import gguf

    warnings = (
        []
        if plan.is_bpe
        else [
            (
                "unigram vocabulary: llama.cpp segments text by merging pairs (the BPE algorithm), so some words are "
                "split differently than in training; train the tokenizer with the bpe model for exact agreement"
            )
        ]
    )
    for w in warnings:
        log.warning(w)
    project = _project(model_dir)
    qtype = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[settings.type]

    with atomic_file(out_file) as tmp:
        writer = gguf.GGUFWriter(tmp, architecture(plan.config).name)
        _write_metadata(writer, plan, model_dir, settings, project)
        types = {}
        for t in plan.tensors:
            ttype = _tensor_type(t, qtype)
            types[t.gguf_name] = ttype
            nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(t.shape, ttype)))
            writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=ttype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(int(np.prod(t.shape)) for t in plan.tensors)
        done = 0
        for t, data in zip(plan.tensors, _read_tensors(plan.tensors)):
            report(done, total, t.gguf_name)
            ttype = types[t.gguf_name]
            if ttype == gguf.GGMLQuantizationType.F32:
                out = data
            elif ttype == gguf.GGMLQuantizationType.F16:
                out = data.astype(np.float16)
            else:
                out = gguf.quants.quantize(data, ttype)
            writer.write_tensor_data(out)
            done += data.size
        writer.close()
        report(total, total, f"{tmp.stat().st_size / 1e6:,.0f} MB")
    return ExportResult(
        out_file,
        settings.type,
        out_file.stat().st_size,
        len(plan.tensors),
        round(time.monotonic() - start, 2),
        warnings,
    )


SUPER_WEIGHT_BLOCKS = 3  # Q8_0 keeps these first blocks' ffn_down in F16


def _tensor_type(t: _Tensor, qtype):
    """1-D tensors (norms) stay F32, as in llama.cpp. The vocabulary tensors (embeddings — also the head when tied —
    and the head) are kept one step more precise than the rest (F16 file: F32; Q8_0 file: F16): they are what
    trans-tokenization created, they set the top-1 token, and they are a small part of the file (demo model, F16:
    max logit error 0.045 → 0.038). Under Q8_0 the first blocks' `ffn_down` also stay F16: that is where Llama
    models keep their few "super weights" that create the huge attention-sink activations (Yu et al., 2024), and
    llama.cpp quantises activations too; on the 64-token test text top-1 agreement went 0.94 → 0.98 for 3% more
    bytes. Q8_0 needs rows that are a multiple of its 32-value block."""
    import gguf

    F32, F16, Q8_0 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0
    if len(t.shape) == 1:
        return F32
    if t.gguf_name in ("token_embd.weight", "output.weight"):
        return {F32: F32, F16: F32}.get(qtype, F16)
    if qtype == Q8_0 and (
        t.shape[-1] % 32 or t.gguf_name in {f"blk.{i}.ffn_down.weight" for i in range(SUPER_WEIGHT_BLOCKS)}
    ):
        return F16
    return qtype


def _read_tensors(tensors: list[_Tensor]) -> Iterator[np.ndarray]:
    """Each tensor as contiguous float32 in GGUF row order, read one at a time with plain file reads (no memory
    map), so memory holds one tensor at a time and is returned to the system after each."""
    for t in tensors:
        if t.stored is None:
            yield np.asarray(t.values, dtype=np.float32)
            continue
        w = (
            np.concatenate([_read_stored(s) for s in (t.stored, *t.more_rows)])
            if t.more_rows
            else _read_stored(t.stored)
        )
        if t.offset:
            w = w + np.float32(t.offset)  # in float32, as HF computes (1 + w)
        if t.permute_heads:
            n = t.permute_heads
            rows, cols = w.shape
            w = w.reshape(n, 2, rows // n // 2, cols).swapaxes(1, 2).reshape(rows, cols)
        yield np.ascontiguousarray(w)


def _read_stored(s: StoredTensor) -> np.ndarray:
    with open(s.file, "rb") as f:
        f.seek(s.start)
        raw = np.frombuffer(f.read(s.end - s.start), dtype=SAFETENSORS_DTYPES[s.dtype]).reshape(s.shape)
    # bfloat16 is the top half of a float32
    return (raw.astype(np.uint32) << 16).view(np.float32) if s.dtype == "BF16" else raw.astype(np.float32)


def _project(model_dir: Path) -> dict:
    path = model_dir / PROJECT_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is damaged; exporting without provenance", path)
        return {}


def _plan(model_dir: Path) -> Plan:
    """Read and check everything the export needs, without loading any weights."""
    if not model_dir.is_dir():
        raise TweetyError("model folder not found", path=model_dir, fix="choose an adapted model folder")
    config = read_json(model_dir / "config.json", "config.json is missing: this is not a Hugging Face model folder")
    check_config(config, model_dir / "config.json")
    merges, pre = [], None
    if (model_dir / "tokenizer.model").exists():
        pieces, is_bpe, add_space_prefix = _sentencepiece(model_dir)
    elif _is_sentencepiece_bpe(model_dir):
        pieces, add_space_prefix = _sentencepiece_bpe_json(model_dir)
        is_bpe = True
    elif not _is_byte_level_bpe(model_dir):
        pieces, is_bpe, add_space_prefix = _sentencepiece(model_dir)  # says that tokenizer.model is missing
    else:
        pieces, merges, pre = _byte_level_bpe(model_dir)
        is_bpe, add_space_prefix = True, False
    special_ids, add_bos, chat_template = _special_tokens(model_dir, pieces)

    files = weight_files(model_dir)
    available = safetensors_headers(files)
    tied = tied_embeddings(config)
    tensors = tensor_plan(config, available, tied, model_dir)
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    embed = next(t for t in tensors if t.gguf_name == "token_embd.weight")
    if embed.shape != (vocab, hidden):
        raise TweetyError(
            f"the embedding table is {embed.shape[0]}×{embed.shape[1]} but config.json says vocabulary "
            f"{vocab} × hidden {hidden}",
            path=embed.file,
            fix="the model folder is inconsistent; re-run the adaptation",
        )
    if len(pieces) != vocab:
        raise TweetyError(
            f"the tokenizer has {len(pieces):,} pieces but the model has {vocab:,} embedding rows",
            path=model_dir / "tokenizer.model",
            fix="the tokenizer does not belong to this model; re-run the adaptation",
        )
    head = next((t for t in tensors if t.gguf_name == "output.weight"), None)
    if head is not None and head.shape != (vocab, hidden):
        raise TweetyError(
            f"the LM head is {head.shape[0]}×{head.shape[1]}, expected {vocab}×{hidden}",
            path=head.file,
            fix="re-run the adaptation",
        )
    return Plan(
        config, tensors, pieces, is_bpe, add_space_prefix, special_ids, add_bos, chat_template, merges=merges, pre=pre
    )


def check_config(config: dict, path: Path) -> Architecture:
    """Refuse, before anything is written, a configuration llama.cpp would run differently from transformers."""
    arch = architecture(config, path)
    c = config

    def refuse(what: str, fix: str):
        raise TweetyError(f"{c.get('model_type')}: {what}", path=path, fix=fix)

    scaling = _rope_parameters(c)["rope_type"]
    if scaling not in ("default", "linear", "llama3") or (scaling == "llama3" and arch.name != "llama"):
        refuse(
            f"RoPE scaling {scaling!r} is not supported by the exporter yet",
            "choose a model without RoPE scaling, or with linear or (Llama 3) llama3 scaling",
        )
    activation = c.get("hidden_activation") or c.get("hidden_act") or "silu"
    if activation != arch.activation:
        refuse(
            f"activation {activation!r}; llama.cpp runs this architecture with {arch.activation}",
            "choose an unmodified checkpoint of the family",
        )
    if c.get("use_sliding_window") or c.get("use_bidirectional_attention"):
        refuse(
            "sliding-window or bidirectional attention, which llama.cpp does not run for this architecture",
            "choose a checkpoint without use_sliding_window / use_bidirectional_attention",
        )
    if not arch.reads_head and not tied_embeddings(c):
        refuse(
            "an untied LM head, which llama.cpp ignores for this architecture (it reuses the embeddings)",
            "keep the head tied to the embeddings when adapting this model",
        )
    big_layer_counts = family(c).big_layer_counts
    if big_layer_counts:
        big = c["num_hidden_layers"] in big_layer_counts
        expected = c["hidden_size"] // c["num_attention_heads"] if big else _head_dim(c)
        if c.get("query_pre_attn_scalar", expected) != expected:
            refuse(
                f"query_pre_attn_scalar {c['query_pre_attn_scalar']} differs from the {expected} llama.cpp uses",
                "choose an unmodified checkpoint of the family",
            )
    if arch.attn_softcapping and (c.get("attn_logit_softcapping") is None or c.get("final_logit_softcapping") is None):
        refuse(
            "no soft-capping values, which llama.cpp requires for this architecture",
            "choose an unmodified checkpoint of the family",
        )
    if (c.get("attn_logit_softcapping") is not None and not arch.attn_softcapping) or (
        c.get("final_logit_softcapping") is not None and not arch.final_softcapping
    ):
        refuse(
            "logit soft-capping, which llama.cpp does not run for this architecture",
            "choose an unmodified checkpoint of the family",
        )
    if arch.sliding_window and _rope_parameters(c, "sliding_attention")["rope_type"] != "default":
        refuse("RoPE scaling on the sliding-window layers is not supported", "choose an unmodified checkpoint")
    if (
        not arch.sliding_window
        and c.get("sliding_window")
        and c.get("use_sliding_window", True)
        and (c["sliding_window"] < c.get("max_position_embeddings", 0))
    ):
        # Mistral 7B v0.1: llama.cpp (like its own converter) ignores the window; the two differ past it only.
        log.warning(
            "%s: sliding window of %d tokens is not kept; llama.cpp attends to the whole context",
            path,
            c["sliding_window"],
        )
    return arch


def _head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _rope_parameters(config: dict, layer_type: str = "full_attention") -> dict:
    """The RoPE settings of one kind of layer, with `rope_type` and `rope_theta` always set. transformers ≥ 5 writes
    `rope_parameters` (per layer type for Gemma 3), older configs `rope_theta`, `rope_scaling` and Gemma 3's
    `rope_local_base_freq`."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if "full_attention" in rope or "sliding_attention" in rope:
        rope = rope.get(layer_type) or {}
    elif layer_type == "sliding_attention":
        rope = {
            "rope_theta": config.get("rope_local_base_freq")
            or rope.get("rope_theta")
            or config.get("rope_theta")
            or 10000.0
        }
    return {
        **rope,
        "rope_type": rope.get("rope_type", rope.get("type", "default")),
        "rope_theta": float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
    }


def _rope(config: dict) -> tuple[float, str, float]:
    """(theta, scaling type, factor) of the full-attention layers."""
    rope = _rope_parameters(config)
    return rope["rope_theta"], rope["rope_type"], float(rope.get("factor", 1.0))


def _llama3_rope_factors(config: dict) -> tuple[float, ...]:
    """Llama 3.x's RoPE scaling as llama.cpp takes it: one divisor per rotated pair (core.convert has the formula)."""
    rope = _rope_parameters(config)
    return tuple(
        llama3_rope_factors(
            _head_dim(config),
            rope["rope_theta"],
            float(rope.get("factor", 8.0)),
            float(rope.get("low_freq_factor", 1.0)),
            float(rope.get("high_freq_factor", 4.0)),
            float(rope.get("original_max_position_embeddings", 8192)),
        )
    )


def _sentencepiece(model_dir: Path) -> tuple[list[tuple[str, float, int]], bool, bool]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    path = model_dir / "tokenizer.model"
    if not path.exists():
        raise TweetyError(
            "no SentencePiece tokenizer (tokenizer.model) in the model folder",
            path=model_dir,
            fix="export a model adapted by Tweety Studio (its folder holds tokenizer.model)",
        )
    m = pb.ModelProto()
    try:
        m.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError has no stable import path across versions
        raise TweetyError(f"tokenizer.model is damaged ({e})", path=path, fix="re-run the tokenizer step") from None
    if not m.pieces:
        raise TweetyError("tokenizer.model has no pieces", path=path, fix="re-run the tokenizer step")
    # SentencePiece piece types use the same numbers as GGUF token types (normal 1 … byte 6).
    pieces = [(p.piece, p.score, int(p.type)) for p in m.pieces]
    return pieces, m.trainer_spec.model_type == pb.TrainerSpec.BPE, m.normalizer_spec.add_dummy_prefix


def _tokenizer_json(model_dir: Path) -> dict | None:
    path = model_dir / "tokenizer.json"
    return read_json(path, "") if path.exists() else None


def _is_byte_level_bpe(model_dir: Path) -> bool:
    spec = _tokenizer_json(model_dir)
    return (
        spec is not None
        and spec["model"].get("type") == "BPE"
        and "ByteLevel" in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    )


def _is_sentencepiece_bpe(model_dir: Path) -> bool:
    """A SentencePiece-style BPE in tokenizer.json only (`▁` for spaces, `<0xNN>` byte fallback): a source model
    converted from GGUF (Gemma, Llama 2) or such a vocabulary extended by core.extend."""
    spec = _tokenizer_json(model_dir)
    return (
        spec is not None
        and spec["model"].get("type") == "BPE"
        and bool(spec["model"].get("byte_fallback"))
        and "ByteLevel" not in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    )


def _sentencepiece_bpe_json(model_dir: Path) -> tuple[list[tuple[str, float, int]], bool]:
    """Pieces with scores and GGUF token types of a SentencePiece-style BPE tokenizer.json, for llama.cpp's
    SentencePiece tokenizer (`llama`), which merges the adjacent pair whose result scores best first: a piece made by
    the merge of rank r scores -r, so llama.cpp merges in the order the BPE merges rank (new merges of an extended
    vocabulary rank, and so score, after every source merge). Special added tokens are control tokens, other added
    tokens (Gemma's runs of spaces and newlines) user-defined ones, which llama.cpp, like transformers, matches in
    the text before segmenting it."""
    import gguf

    spec = _tokenizer_json(model_dir)
    ids, tokens, types = _json_tokens(spec, model_dir)
    scores = [0.0] * len(tokens)
    for rank, merge in enumerate(spec["model"]["merges"]):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        i = ids.get(left + right)
        if i is not None and scores[i] == 0.0:
            scores[i] = -float(rank + 1)
    unk = spec["model"].get("unk_token")
    pieces = []
    for i, token in enumerate(tokens):
        kind = types.get(i)
        if kind is None:
            kind = (
                gguf.TokenType.UNKNOWN
                if token == unk
                else gguf.TokenType.BYTE
                if _is_byte_piece(token)
                else gguf.TokenType.NORMAL
            )
        pieces.append((token, scores[i], int(kind)))
    add_space_prefix = "Prepend" in json.dumps(spec.get("normalizer")) or "prepend_scheme" in json.dumps(
        spec.get("pre_tokenizer")
    ).replace('"prepend_scheme": "never"', "")
    return pieces, add_space_prefix


def _json_tokens(spec: dict, model_dir: Path) -> tuple[dict[str, int], list[str], dict[int, int]]:
    """(piece → id, pieces by id, GGUF token type of each added token) of a tokenizer.json: special added tokens are
    control tokens, the others user-defined ones."""
    import gguf

    ids = dict(spec["model"]["vocab"])
    types: dict[int, int] = {}
    for t in spec.get("added_tokens", []):
        ids[t["content"]] = t["id"]
        types[t["id"]] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
    tokens = [None] * (max(ids.values()) + 1)
    for token, i in ids.items():
        tokens[i] = token
    if None in tokens:
        raise TweetyError(
            f"tokenizer.json has no token with id {tokens.index(None)}",
            path=model_dir,
            fix="re-run the vocabulary extension",
        )
    return ids, tokens, types


def _is_byte_piece(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def _byte_level_bpe(model_dir: Path) -> tuple[list[tuple[str, float, int]], list[str], str]:
    """Tokens (with GGUF token types: special added tokens are control tokens), merges and llama.cpp's pre-tokenizer
    name of a byte-level BPE tokenizer.json, as llama.cpp's converter writes them."""
    import gguf

    spec = _tokenizer_json(model_dir)
    _, tokens, types = _json_tokens(spec, model_dir)
    pieces = [(t, 0.0, int(types.get(i, gguf.TokenType.NORMAL))) for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    extend = (_project(model_dir).get("settings") or {}).get("extend") or {}
    pre = extend.get("gguf_pre")
    if pre is None:
        plain = spec.get("pre_tokenizer") or {}
        if plain.get("type") == "ByteLevel" and plain.get("use_regex", True):
            pre = "gpt2"  # GPT-2's own regex, which llama.cpp's `gpt2` pre-tokenizer is
        else:
            raise TweetyError(
                "cannot tell which llama.cpp pre-tokenizer this byte-level vocabulary needs",
                path=model_dir / "tokenizer.json",
                fix="extend a source model given as a GGUF file "
                "(its pre-tokenizer name is recorded in project.json as settings.extend.gguf_pre)",
            )
    return pieces, merges, pre


def _special_tokens(model_dir: Path, pieces: list[tuple[str, float, int]]) -> tuple[dict[str, int], bool, str | None]:
    """BOS/EOS/UNK/PAD ids (checked against the SentencePiece pieces), whether BOS is added, the chat template."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise TweetyError(
            f"the tokenizer cannot be loaded ({e})",
            path=model_dir,
            fix="the folder needs tokenizer.json and tokenizer_config.json",
        ) from None
    index = {p: i for i, (p, _, _) in enumerate(pieces)}
    ids = {}
    for name in ("bos", "eos", "unk", "pad"):
        token = getattr(tok, f"{name}_token")
        if token is None:
            continue
        if token not in index or tok.convert_tokens_to_ids(token) != index[token]:
            raise TweetyError(
                f"the {name} token {token!r} has different ids in tokenizer.json and tokenizer.model",
                path=model_dir,
                fix="re-run the tokenizer step",
            )
        ids[name] = index[token]
    add_bos = "bos" in ids and adds_bos(tok) and tok.bos_token_id == ids["bos"]
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return ids, add_bos, template


def tensor_plan(config: dict, available: dict[str, StoredTensor], tied: bool, model_dir: Path) -> list[_Tensor]:
    """The GGUF tensors of a model: every stored tensor named by `ARCHITECTURES` (anything else is refused), plus the
    computed ones (Llama 3's rope_freqs), in a stable order."""
    arch = architecture(config, model_dir / "config.json")
    n_layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    names = dict(GLOBAL_TENSORS)
    for i in range(n_layers):
        names.update({f"model.layers.{i}.{hf}": f"blk.{i}.{g}" for hf, g in arch.block.items()})
    plan = []
    for hf_name, stored in available.items():
        if hf_name.endswith(_SKIPPED) or (tied and GLOBAL_TENSORS.get(hf_name) == "output.weight"):
            continue
        gguf_name = names.get(hf_name)
        if gguf_name is None:
            raise TweetyError(
                f"unexpected tensor {hf_name!r} for a {config.get('model_type')} model",
                path=stored.file,
                fix="only unmodified checkpoints of the supported families can be exported",
            )
        permute = 0
        if arch.permute_qk:
            permute = heads if ".attn_q." in gguf_name else kv_heads if ".attn_k." in gguf_name else 0
        offset = arch.norm_offset if gguf_name.endswith("norm.weight") else 0.0
        plan.append(_Tensor(hf_name, gguf_name, stored, permute, offset=offset))
    if _rope_parameters(config)["rope_type"] == "llama3":
        plan.append(_Tensor("", ROPE_FREQS, None, values=_llama3_rope_factors(config)))
    have = {t.gguf_name for t in plan}
    needed = (
        ["token_embd.weight", "output_norm.weight"]
        + ([] if tied else ["output.weight"])
        + [f"blk.{i}.{g}" for i in range(n_layers) for g in arch.block.values()]
    )
    missing = [n for n in needed if n not in have]
    if missing:
        raise TweetyError(
            f"{len(missing)} weight tensors are missing (first: {missing[0]})",
            path=model_dir,
            fix="copy the complete model folder, or re-run the adaptation",
        )
    # llama.cpp does not care about order; a stable one (embeddings, blocks in order, head) makes files comparable.
    order = {n: i for i, n in enumerate([ROPE_FREQS] + needed)}
    plan.sort(key=lambda t: (order.get(t.gguf_name, len(order)), t.gguf_name))
    return plan


def _layer_types(config: dict, arch: Architecture) -> list[str]:
    """Each layer's attention, "sliding_attention" or "full_attention"; configs before transformers 4.53 give a period
    instead (Gemma 2: every other layer, Gemma 3: `sliding_window_pattern`, default 6: five local, one global)."""
    n = config["num_hidden_layers"]
    if config.get("layer_types"):
        return list(config["layer_types"])
    period = 2 if arch.name == "gemma2" else int(config.get("sliding_window_pattern") or 6)
    return ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n)]


def _write_metadata(writer, plan: Plan, model_dir: Path, settings: ExportSettings, project: dict) -> None:
    import gguf

    c = plan.config
    arch = architecture(c)
    heads = c["num_attention_heads"]
    head_dim = _head_dim(c)
    writer.add_name(settings.name or model_dir.resolve().name)
    languages = list(settings.languages) or [x for x in [project.get("language")] if x]
    if languages:
        writer.add_languages(languages)
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[settings.type]
    )
    if settings.type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(c["vocab_size"])
    writer.add_context_length(c.get("max_position_embeddings", 2048))
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(c.get("num_key_value_heads", heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    theta, scaling, factor = _rope(c)
    writer.add_rope_freq_base(theta)
    if scaling == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6 if arch.norm_offset else 1e-5)))
    if arch.attn_softcapping:
        writer.add_attn_logit_softcapping(float(c["attn_logit_softcapping"]))
    if c.get("final_logit_softcapping") is not None:
        writer.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
    if arch.sliding_window:
        sliding = [t == "sliding_attention" for t in _layer_types(c, arch)]
        if any(sliding):
            writer.add_sliding_window(int(c["sliding_window"]))
            writer.add_sliding_window_pattern(sliding)
            writer.add_rope_freq_base_swa(_rope_parameters(c, "sliding_attention")["rope_theta"])

    if plan.pre is None:
        writer.add_tokenizer_model("llama")
        writer.add_token_list([p for p, _, _ in plan.pieces])
        writer.add_token_scores([s for _, s, _ in plan.pieces])
        writer.add_token_types([t for _, _, t in plan.pieces])
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(plan.pre)
        writer.add_token_list([p for p, _, _ in plan.pieces])
        writer.add_token_types([t for _, _, t in plan.pieces])
        writer.add_token_merges(plan.merges)
    for name, value in plan.special_ids.items():
        getattr(writer, f"add_{name}_token_id")(value)
    writer.add_add_bos_token(plan.add_bos)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(plan.add_space_prefix)
    if plan.chat_template:
        writer.add_chat_template(plan.chat_template)

    # Provenance: where the model came from, so a GGUF found on a disk later can be traced back.
    init_method = (project.get("settings", {}).get("init") or {}).get("method")
    source = project.get("source_model")
    if source:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, Path(source).name if source != DEFAULT_MODEL else "SmolLM2-135M-Instruct")
        writer.add_string("tweety.source_model", source)
    if init_method:
        writer.add_string("tweety.init_method", init_method)
    if project.get("vocabulary"):  # "replace" | "extend": whether the source's own (English) text still reads as such
        writer.add_string("tweety.vocabulary", project["vocabulary"])
    tuned = project.get("settings", {}).get("finetune")
    if tuned:
        writer.add_string("tweety.finetune", f"{tuned['stage']}, {tuned['steps']} steps")
    inputs = project.get("inputs_sha256") or {}
    if inputs:
        writer.add_array("tweety.inputs_sha256", [f"{digest}  {name}" for name, digest in sorted(inputs.items())])
    writer.add_string("tweety.tokenizer", "bpe" if plan.is_bpe else "unigram")
    for key, value in plan.metadata.items():
        writer.add_string(key, value)
