"""GGUF export of an adapted Llama-architecture model, for llama.cpp and the tools built on it.

Everything is checked before a byte is written: architecture, tokenizer, safetensors headers, and that the
vocabulary, the embedding table and the head agree. Tensors are then streamed one at a time from the safetensors
files (memory stays near one tensor, even for a 7B model) into a temporary file renamed into place at the end.

llama.cpp conventions followed (gguf-py, arch `llama`):
- Q and K rows are permuted from the Hugging Face rotate-half layout to llama.cpp's interleaved RoPE layout.
- Tied embeddings: no `output.weight`; llama.cpp then uses `token_embd.weight` for the head.
- The vocabulary is the SentencePiece model (`tokenizer.ggml.model = "llama"`), with scores and piece types. llama.cpp
  segments it by merging the best-scoring adjacent pair first — SentencePiece's BPE algorithm — so a BPE vocabulary
  tokenizes exactly as in training; a unigram vocabulary is exported too, with a warning, since there it differs.
- A byte-level BPE vocabulary (a source vocabulary extended by core.extend: SmolLM2, Llama 3) is written as llama.cpp
  writes GPT-2-style vocabularies (`tokenizer.ggml.model = "gpt2"`): tokens, types, merges, and `tokenizer.ggml.pre`,
  the name of llama.cpp's pre-tokenizer for the source model (recorded when the vocabulary was extended).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_file
from core.models import SAFETENSORS_DTYPES, SUPPORTED_TYPES, StoredTensor, safetensors_headers, weight_files
from core.project import PROJECT_FILE
from core.resources import read_json

log = logging.getLogger(__name__)

TYPES = ("f32", "f16", "q8_0")
_SKIPPED = (".rotary_emb.inv_freq",)  # buffers some old checkpoints saved; llama.cpp recomputes them


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


@dataclass(frozen=True)
class _Tensor:
    hf_name: str
    gguf_name: str
    stored: StoredTensor
    permute_heads: int = 0  # Q/K: number of heads to permute by
    more_rows: tuple[StoredTensor, ...] = ()  # stacked below `stored` (a Hydra's merged vocabulary tables)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.more_rows:
            return (sum(s.shape[0] for s in (self.stored, *self.more_rows)), *self.stored.shape[1:])
        return self.stored.shape

    @property
    def file(self) -> Path:
        return self.stored.file


@dataclass
class _Plan:
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


def export_gguf(model_dir: str | Path, out_file: str | Path, settings: ExportSettings = ExportSettings(), *,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> ExportResult:
    """Write `model_dir` (an adapted HF model folder) as one GGUF file."""
    start = time.monotonic()
    model_dir, out_file = Path(model_dir), Path(out_file)
    report = Reporter(progress, cancel, "Exporting GGUF")
    if settings.type not in TYPES:
        raise TweetyError(f"unknown GGUF type {settings.type!r}", fix="choose f32, f16 or q8_0")
    if out_file.exists() and not settings.overwrite:
        raise TweetyError("the destination file exists; Tweety Studio never overwrites your files", path=out_file,
                          fix="choose another file name (or confirm replacing it)")
    if out_file.suffix.lower() != ".gguf":
        raise TweetyError("the destination should end in .gguf", path=out_file, fix="name the file like model.gguf")
    return write_plan(_plan(model_dir), model_dir, out_file, settings, report, start)


def write_plan(plan: _Plan, model_dir: Path, out_file: Path, settings: ExportSettings, report: Reporter,
               start: float) -> ExportResult:
    """Write a checked plan (from `_plan`, or core.hydra's merged-vocabulary plan) as one GGUF file, atomically."""
    import gguf

    warnings = [] if plan.is_bpe else [(
        "unigram vocabulary: llama.cpp segments text by merging pairs (the BPE algorithm), so some words are split "
        "differently than in training; train the tokenizer with the bpe model for exact agreement")]
    for w in warnings:
        log.warning(w)
    project = _project(model_dir)
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[settings.type]

    with atomic_file(out_file) as tmp:
        writer = gguf.GGUFWriter(tmp, "llama")
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
    return ExportResult(out_file, settings.type, out_file.stat().st_size, len(plan.tensors),
                        round(time.monotonic() - start, 2), warnings)


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
    if qtype == Q8_0 and (t.shape[-1] % 32 or t.gguf_name in {
            f"blk.{i}.ffn_down.weight" for i in range(SUPER_WEIGHT_BLOCKS)}):
        return F16
    return qtype




def _read_tensors(tensors: list[_Tensor]) -> Iterator[np.ndarray]:
    """Each tensor as contiguous float32 in GGUF row order, read one at a time with plain file reads (no memory
    map), so memory holds one tensor at a time and is returned to the system after each."""
    for t in tensors:
        w = np.concatenate([_read_stored(s) for s in (t.stored, *t.more_rows)]) if t.more_rows else _read_stored(
            t.stored)
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


def _plan(model_dir: Path) -> _Plan:
    """Read and check everything the export needs, without loading any weights."""
    if not model_dir.is_dir():
        raise TweetyError("model folder not found", path=model_dir, fix="choose an adapted model folder")
    config = read_json(model_dir / "config.json", "config.json is missing: this is not a Hugging Face model folder")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise TweetyError(f"model type {model_type!r} cannot be exported; only Llama-architecture models "
                          "(Llama, Mistral, TowerInstruct, SmolLM2) can", path=model_dir / "config.json",
                          fix="choose a Llama-architecture model")
    _, scaling, _ = _rope(config)
    if scaling not in ("default", "linear"):
        raise TweetyError(f"RoPE scaling {scaling!r} is not supported by the exporter yet",
                          path=model_dir / "config.json", fix="choose a model without rope scaling, or with linear")
    merges, pre = [], None
    if (model_dir / "tokenizer.model").exists() or not _is_byte_level_bpe(model_dir):
        pieces, is_bpe, add_space_prefix = _sentencepiece(model_dir)
    else:
        pieces, merges, pre = _byte_level_bpe(model_dir)
        is_bpe, add_space_prefix = True, False
    special_ids, add_bos, chat_template = _special_tokens(model_dir, pieces)

    files = weight_files(model_dir)
    available = safetensors_headers(files)
    tied = bool(config.get("tie_word_embeddings", False))
    tensors = _tensor_plan(config, available, tied, model_dir)
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    embed = next(t for t in tensors if t.gguf_name == "token_embd.weight")
    if embed.shape != (vocab, hidden):
        raise TweetyError(f"the embedding table is {embed.shape[0]}×{embed.shape[1]} but config.json says vocabulary "
                          f"{vocab} × hidden {hidden}", path=embed.file, fix="the model folder is inconsistent; "
                          "re-run the adaptation")
    if len(pieces) != vocab:
        raise TweetyError(f"the tokenizer has {len(pieces):,} pieces but the model has {vocab:,} embedding rows",
                          path=model_dir / "tokenizer.model", fix="the tokenizer does not belong to this model; "
                          "re-run the adaptation")
    head = next((t for t in tensors if t.gguf_name == "output.weight"), None)
    if head is not None and head.shape != (vocab, hidden):
        raise TweetyError(f"the LM head is {head.shape[0]}×{head.shape[1]}, expected {vocab}×{hidden}",
                          path=head.file, fix="re-run the adaptation")
    return _Plan(config, tensors, pieces, is_bpe, add_space_prefix, special_ids, add_bos, chat_template,
                 merges=merges, pre=pre)


def _rope(config: dict) -> tuple[float, str, float]:
    """(theta, scaling type, factor); transformers ≥ 5 writes `rope_parameters`, older configs `rope_theta` and
    `rope_scaling`."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = config.get("rope_theta") or rope.get("rope_theta") or 10000.0
    return float(theta), rope.get("rope_type", rope.get("type", "default")), float(rope.get("factor", 1.0))


def _sentencepiece(model_dir: Path) -> tuple[list[tuple[str, float, int]], bool, bool]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    path = model_dir / "tokenizer.model"
    if not path.exists():
        raise TweetyError("no SentencePiece tokenizer (tokenizer.model) in the model folder", path=model_dir,
                          fix="export a model adapted by Tweety Studio (its folder holds tokenizer.model)")
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
    return spec is not None and spec["model"].get("type") == "BPE" and "ByteLevel" in json.dumps(
        [spec.get("pre_tokenizer"), spec.get("decoder")])


def _byte_level_bpe(model_dir: Path) -> tuple[list[tuple[str, float, int]], list[str], str]:
    """Tokens (with GGUF token types: special added tokens are control tokens), merges and llama.cpp's pre-tokenizer
    name of a byte-level BPE tokenizer.json, as llama.cpp's converter writes them."""
    import gguf

    spec = _tokenizer_json(model_dir)
    ids = dict(spec["model"]["vocab"])
    types = {}
    for t in spec.get("added_tokens", []):
        ids[t["content"]] = t["id"]
        types[t["id"]] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
    tokens = [None] * (max(ids.values()) + 1)
    for token, i in ids.items():
        tokens[i] = token
    if None in tokens:
        raise TweetyError(f"tokenizer.json has no token with id {tokens.index(None)}", path=model_dir,
                          fix="re-run the vocabulary extension")
    pieces = [(t, 0.0, int(types.get(i, gguf.TokenType.NORMAL))) for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    extend = (_project(model_dir).get("settings") or {}).get("extend") or {}
    pre = extend.get("gguf_pre")
    if pre is None:
        plain = spec.get("pre_tokenizer") or {}
        if plain.get("type") == "ByteLevel" and plain.get("use_regex", True):
            pre = "gpt2"  # GPT-2's own regex, which llama.cpp's `gpt2` pre-tokenizer is
        else:
            raise TweetyError("cannot tell which llama.cpp pre-tokenizer this byte-level vocabulary needs",
                              path=model_dir / "tokenizer.json", fix="extend a source model given as a GGUF file "
                              "(its pre-tokenizer name is recorded in project.json as settings.extend.gguf_pre)")
    return pieces, merges, pre


def _special_tokens(model_dir: Path, pieces: list[tuple[str, float, int]]) -> tuple[dict[str, int], bool, str | None]:
    """BOS/EOS/UNK/PAD ids (checked against the SentencePiece pieces), whether BOS is added, the chat template."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise TweetyError(f"the tokenizer cannot be loaded ({e})", path=model_dir,
                          fix="the folder needs tokenizer.json and tokenizer_config.json") from None
    index = {p: i for i, (p, _, _) in enumerate(pieces)}
    ids = {}
    for name in ("bos", "eos", "unk", "pad"):
        token = getattr(tok, f"{name}_token")
        if token is None:
            continue
        if token not in index or tok.convert_tokens_to_ids(token) != index[token]:
            raise TweetyError(f"the {name} token {token!r} has different ids in tokenizer.json and tokenizer.model",
                              path=model_dir, fix="re-run the tokenizer step")
        ids[name] = index[token]
    add_bos = "bos" in ids and tok("a")["input_ids"][:1] == [ids["bos"]]
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return ids, add_bos, template


def _tensor_plan(config: dict, available: dict[str, StoredTensor], tied: bool,
                 model_dir: Path) -> list[_Tensor]:
    import gguf

    n_layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    plan = []
    for hf_name, stored in available.items():
        if hf_name.endswith(_SKIPPED) or (tied and hf_name == "lm_head.weight"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TweetyError(f"unexpected tensor {hf_name!r} for a Llama-architecture model", path=stored.file,
                              fix="only plain Llama/Mistral checkpoints can be exported")
        permute = heads if ".attn_q." in gguf_name else kv_heads if ".attn_k." in gguf_name else 0
        plan.append(_Tensor(hf_name, gguf_name, stored, permute))
    have = {t.gguf_name for t in plan}
    needed = ["token_embd.weight", "output_norm.weight"] + ([] if tied else ["output.weight"]) + [
        f"blk.{i}.{p}.weight" for i in range(n_layers) for p in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    missing = [n for n in needed if n not in have]
    if missing:
        raise TweetyError(f"{len(missing)} weight tensors are missing (first: {missing[0]})", path=model_dir,
                          fix="copy the complete model folder, or re-run the adaptation")
    # llama.cpp does not care about order; a stable one (embeddings, blocks in order, head) makes files comparable.
    order = {n: i for i, n in enumerate(needed)}
    plan.sort(key=lambda t: (order.get(t.gguf_name, len(order)), t.gguf_name))
    return plan


def _write_metadata(writer, plan: _Plan, model_dir: Path, settings: ExportSettings, project: dict) -> None:
    import gguf

    c = plan.config
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    writer.add_name(settings.name or model_dir.resolve().name)
    languages = list(settings.languages) or [x for x in [project.get("language")] if x]
    if languages:
        writer.add_languages(languages)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[settings.type])
    if settings.type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(c["vocab_size"])
    writer.add_context_length(c.get("max_position_embeddings", 2048))
    writer.add_embedding_length(c["hidden_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(c.get("num_key_value_heads", heads))
    if head_dim != c["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    theta, scaling, factor = _rope(c)
    writer.add_rope_freq_base(theta)
    if scaling == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-5)))

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
        writer.add_base_model_name(0, Path(source).name if source != "default" else "SmolLM2-135M-Instruct")
        writer.add_string("tweety.source_model", source)
    if init_method:
        writer.add_string("tweety.init_method", init_method)
    tuned = project.get("settings", {}).get("finetune")
    if tuned:
        writer.add_string("tweety.finetune", f"{tuned['stage']}, {tuned['steps']} steps")
    inputs = project.get("inputs_sha256") or {}
    if inputs:
        writer.add_array("tweety.inputs_sha256", [f"{digest}  {name}" for name, digest in sorted(inputs.items())])
    writer.add_string("tweety.tokenizer", "bpe" if plan.is_bpe else "unigram")
    for key, value in plan.metadata.items():
        writer.add_string(key, value)
