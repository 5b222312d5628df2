"""Target tokenizer: a SentencePiece model trained on target-language text, saved as a Hugging Face tokenizer folder.

Choices that matter (see DEVELOPERS.md):
- Exact round trip: `identity` normalisation, no whitespace collapsing, no dummy-prefix space, byte fallback — so
  decode(encode(x)) == x for any text (a lossy tokenizer flatters bits-per-byte and breaks chat).
- The source model's special and chat-control tokens (`<|im_start|>`, `<|im_end|>`, `<s>` …) become control pieces
  of the new vocabulary, so the chat template and stop tokens keep working; they map 1:1 onto the source rows.
- The HF tokenizer is built directly from the SentencePiece pieces and scores (Unigram or BPE model, spaces as
  `▁`), so it does not depend on transformers' converters; a check after training proves both agree.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir, run_in_child

log = logging.getLogger(__name__)

UNK = "<unk>"
SPACE = "▁"  # SentencePiece's visible space
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@dataclass(frozen=True)
class TokenizerSettings:
    vocab_size: int = 16000
    # BPE by default: llama.cpp segments a SentencePiece vocabulary with the BPE algorithm, so only a BPE
    # vocabulary tokenizes identically after GGUF export (a unigram one differed on 199 of 200 verses).
    model_type: str = "bpe"  # or "unigram"
    max_sentences: int = 2_000_000  # SentencePiece samples this many lines at most
    seed: int = 0


# The largest vocabulary a supported model family has (Gemma 3: 262,144). A bigger one is surely a typo (an extra
# zero or three): refused, as the wizard's spin box stops there.
MAX_VOCAB_SIZE = 262_144
MIN_LINES = 10  # of target text, to learn a vocabulary from


def enough_lines(lines: list[str], path: str | Path | None = None) -> list[str]:
    """The non-empty lines of a target text (`path`, named in the message), refused when too few to learn from."""
    lines = [line for line in lines if line.strip()]
    if len(lines) < MIN_LINES:
        raise TweetyError(
            f"only {len(lines)} non-empty line{'' if len(lines) == 1 else 's'} of target text (a "
            f"vocabulary is learnt from {MIN_LINES} lines at the very least)",
            path=path,
            fix="provide more target-language text: thousands of lines make a good vocabulary",
        )
    return lines


def smaller_than_asked(asked: int, size: int) -> str:
    """ "" when the vocabulary has the size asked; else the warning a user gets. SentencePiece (hard_vocab_limit
    off) stops when the text has no more pieces worth a token — rightly, but the user asked for more and must know."""
    if size >= asked:
        return ""
    return (
        f"the new vocabulary has {size:,} tokens, not the {asked:,} asked: the target text has no more pieces "
        "worth a token (more target text allows a bigger vocabulary)"
    )


_PLACEHOLDER = re.compile(r"^<unused\d+>$|^\[multimodal\]$")  # Gemma's reserved slots: 6,242 tokens never seen


def source_special_tokens(source_tokenizer) -> list[str]:
    """The source tokenizer's special tokens in id order (BOS/EOS/PAD, chat-control tokens such as `<|im_start|>` or
    `<start_of_turn>`, …). Left out: added tokens that are not special (Gemma's runs of spaces and newlines, HTML
    tags: ordinary text, which the new vocabulary learns or not from the target text) and reserved placeholders
    (`<unused17>`), which would crowd a small vocabulary."""
    added = getattr(source_tokenizer, "added_tokens_decoder", {}) or {}
    tokens = [t.content for _, t in sorted(added.items()) if t.special]
    for t in source_tokenizer.all_special_tokens:
        if t not in tokens:
            tokens.append(t)
    return [t for t in tokens if t and t != UNK and not _PLACEHOLDER.match(t)]


def adds_bos(tokenizer) -> bool:
    """Whether `tokenizer` opens every encoding with its BOS token by itself (Llama-style), rather than merely having
    one. The one place this is probed: the target tokenizer copies it, evaluation and fine-tuning open each window
    with it, and the GGUF export records it for llama.cpp."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


source_adds_bos = adds_bos  # the older name, for callers outside core


def train_tokenizer(
    target_lines: list[str],
    source_tokenizer,
    out_dir: str | Path,
    settings: TokenizerSettings = TokenizerSettings(),
    *,
    path: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Train the target tokenizer on `target_lines` (read from `path`, named in messages) and save it (HF files +
    `tokenizer.model`) in `out_dir`. It may have fewer tokens than asked (`smaller_than_asked` says so)."""
    report = Reporter(progress, cancel, "Training tokenizer")
    specials = source_special_tokens(source_tokenizer)
    minimum = 256 + len(specials) + 100
    if settings.vocab_size < minimum:
        raise TweetyError(
            f"a vocabulary of {settings.vocab_size} is too small: 256 byte pieces and "
            f"{len(specials)} special tokens alone need {256 + len(specials)}",
            fix=f"choose at least {minimum} (typical: 8000–32000)",
        )
    if settings.vocab_size > MAX_VOCAB_SIZE:
        raise TweetyError(
            f"a vocabulary of {settings.vocab_size:,} is bigger than any model's (the biggest have {MAX_VOCAB_SIZE:,})",
            fix="choose a size between 8,000 and 64,000 (typical)",
        )
    if settings.model_type not in {"unigram", "bpe"}:
        raise TweetyError(f"unknown tokenizer model {settings.model_type!r}", fix="use unigram or bpe")
    lines = enough_lines(target_lines, path)
    rng = random.Random(settings.seed)
    if len(lines) > settings.max_sentences:
        lines = rng.sample(lines, settings.max_sentences)

    options = dict(vocab_size=settings.vocab_size, model_type=settings.model_type, control_symbols=specials)
    with tempfile.TemporaryDirectory(prefix="tweety-tokenizer-") as work:
        # The lines go to the child as a file: pickling two million lines through a pipe would copy them twice.
        Path(work, _LINES).write_bytes("\n".join(lines).encode("utf-8"))
        code = run_in_child(
            report, _train_sentencepiece, (work, options), f"{len(lines):,} lines, vocabulary {settings.vocab_size:,}"
        )
        failed, model = Path(work, _ERROR), Path(work, _MODEL)
        if failed.exists() or code != 0 or not model.exists():
            reason = failed.read_text(encoding="utf-8") if failed.exists() else f"it stopped, exit code {code}"
            raise TweetyError(
                f"SentencePiece could not train on this text ({reason})",
                fix="provide more (or more varied) target text, or a smaller vocabulary",
            )
        proto = model.read_bytes()
    hf = build_hf_tokenizer(proto, source_tokenizer)
    _check_round_trip(hf, lines[:200])
    with atomic_dir(out_dir) as tmp:
        (tmp / "tokenizer.model").write_bytes(proto)
        hf.save_pretrained(tmp)
    report(1, 1, f"{len(hf):,} tokens")
    return Path(out_dir)


_LINES, _MODEL, _ERROR = "lines.txt", "tokenizer.model", "error.txt"  # in the training's temporary folder


def _train_sentencepiece(work: str, options: dict) -> None:
    """Runs in a child process (core.jobs.run_in_child): SentencePiece's trainer is native code that never looks at
    the cancel token, so a cancelled training is stopped by killing this process, and its CPU use ends with it (a
    thread ran on to the end, unseen). The model appears in `work` only whole (written, then renamed); a failure's
    message is left in error.txt."""
    import sentencepiece as spm

    lines = Path(work, _LINES).read_bytes().decode("utf-8").split("\n")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            hard_vocab_limit=False,
            unk_id=0,
            unk_piece=UNK,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
            **options,
        )
    except Exception as e:  # noqa: BLE001 - SentencePiece's own errors (RuntimeError and others): the parent says them
        Path(work, _ERROR).write_text(str(e) or type(e).__name__, encoding="utf-8")
        return
    partial = Path(work, _MODEL + ".part")
    partial.write_bytes(model.getvalue())
    os.replace(partial, Path(work, _MODEL))


def build_hf_tokenizer(proto: bytes, source_tokenizer):
    """A transformers fast tokenizer equivalent to the SentencePiece model `proto`."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    m = pb.ModelProto()
    m.ParseFromString(proto)
    pieces = [(p.piece, p.score) for p in m.pieces]
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
    if m.trainer_spec.model_type == pb.TrainerSpec.UNIGRAM:
        model = models.Unigram(pieces, unk_id=0, byte_fallback=True)
    else:
        merges = _bpe_merges(pieces, vocab)
        model = models.BPE(vocab, merges, unk_token=UNK, byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    # No dummy prefix (as in byte-level BPE sources): a space is always a `▁`, text is never altered, and text
    # after a special token is tokenized exactly like text at the start of a line.
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = [p.piece for p in m.pieces if p.type == pb.ModelProto.SentencePiece.CONTROL]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    names = {k: getattr(source_tokenizer, k) for k in ("bos_token", "eos_token", "pad_token")}
    names = {k: v for k, v in names.items() if v in vocab}
    if names.get("bos_token") and adds_bos(source_tokenizer):
        bos = names["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, **names)
    hf.chat_template = getattr(source_tokenizer, "chat_template", None)
    return hf


def _bpe_merges(pieces: list[tuple[str, float]], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Recover BPE merges from a SentencePiece BPE vocabulary: every piece that splits into two pieces,
    ordered by the piece's score (SentencePiece BPE scores are merge ranks)."""
    merges = []
    for piece, score in pieces:
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab:
                merges.append((score, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in merges]


def _check_round_trip(hf, lines: list[str]) -> None:
    for line in lines:
        ids = hf(line, add_special_tokens=False)["input_ids"]
        if hf.decode(ids) != line:
            raise RuntimeError(f"tokenizer does not round-trip {line!r}")  # a bug, not a user error


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").exists():
        raise TweetyError(
            "no tokenizer here (tokenizer.json missing)",
            path=folder,
            fix="choose the folder written by `tweety tokenizer`",
        )
    return AutoTokenizer.from_pretrained(folder)


def byte_level_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet (byte-level BPE: SmolLM2, Llama 3): every byte has a printable stand-in —
    printable Latin-1 bytes stand for themselves, the others for chr(256 + k) in byte order (`Ġ` is a space)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}


BYTE_OF_CHAR = {c: b for b, c in byte_level_chars().items()}  # the alphabet reversed: stand-in → byte


def is_byte_level(tokenizer) -> bool:
    """Whether a (fast) tokenizer's pieces are written in the byte-level alphabet."""
    backend = tokenizer.backend_tokenizer
    return "ByteLevel" in repr(backend.pre_tokenizer) + repr(backend.decoder)


def piece_bytes(piece: str, byte_level: bool = False) -> bytes | None:
    """The exact UTF-8 bytes a target piece stands for (`▁` is a space, `<0xC3>` one raw byte; with `byte_level`,
    each character is the byte it stands for: `Ġcasa` is b" casa")."""
    if byte_level:
        return b"".join(bytes([BYTE_OF_CHAR[c]]) if c in BYTE_OF_CHAR else c.encode("utf-8") for c in piece)
    m = _BYTE_PIECE.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    return piece.replace(SPACE, " ").encode("utf-8")


def encode_many(
    tokenizer, texts: list[str], report=None, message: str = "tokenizing", batch: int = 256
) -> list[list[int]]:
    """Token ids of many texts (no special tokens), `batch` texts per tokenizer call: a call keeps every core busy,
    and between calls the GIL is free (a GUI thread stays responsive) and `report` (a `Reporter`) can show progress
    and honour cancel. A call holds the GIL while transformers turns its result into Python lists: measured on
    SmolLM2's tokenizer, 2,000 verses 64–168 ms, 256 verses ~6 ms."""
    ids: list[list[int]] = []
    for i in range(0, len(texts), batch):
        if report is not None:
            report(i, len(texts), message)
        ids.extend(tokenizer(texts[i : i + batch], add_special_tokens=False)["input_ids"])
    return ids
