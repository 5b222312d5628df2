"""Mapping: for every target token, a probability distribution over source tokens.

Evidence, in order of authority:
1. special tokens map 1:1 onto the same source token (`<|im_end|>` → `<|im_end|>`);
2. tokens without letters (numbers, punctuation, whitespace, raw bytes) map onto the source tokens of the very same
   UTF-8 bytes — language-neutral, and exact even for a byte-level BPE source (`é` → `Ã©`, `<0x0A>` → `Ċ`);
3. translation resources — any number of aligned parallel corpora (link counts; pairs seen fewer than
   `min_pair_count` times are dropped, tokens with fewer than `min_token_count` links get no alignment evidence) and
   dictionaries — each normalised per token and mixed by the resource's weight;
4. otherwise FVT: the source tokenization of the target token's own bytes. Where the source already reads the
   language (`MappingSettings.spelling_share`), aligned tokens also take their FVT row, whole or in part.
On top of all that, the linguist's overrides file (see `OVERRIDES_HELP`) replaces rows and removes links.
The result is a sparse row-stochastic matrix (target vocab × source vocab): every operation is a sparse matrix
operation or one pass over the target vocabulary, so 128k-token vocabularies are fine (no O(V²) work). The matrix is
kept as a sum of parts, one per resource plus `override` and `fallback`, so every weight says where it came from.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.dictionary import DictionarySettings, word_counts
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir
from core.resources import DictionaryEntry, OverrideLine, head_bytes
from core.tokenizer import byte_level_chars, is_byte_level, piece_bytes

log = logging.getLogger(__name__)

MATRIX_FILE = "mapping.safetensors"
TABLE_FILE = "mapping.jsonl"
COVERAGE_FILE = "coverage.json"
OVERRIDE, FALLBACK = "override", "fallback"  # names of the parts that are not translation resources

OVERRIDES_HELP = """\
# Mapping overrides for Tweety Studio: one correction per line, columns separated by a TAB.
#   TARGET<TAB>SOURCE[<TAB>WEIGHT]   TARGET's tokens get their embedding from SOURCE's tokens; several lines for the
#                                    same target are mixed by WEIGHT (default 1); the computed evidence is replaced.
#   -<TAB>TARGET<TAB>SOURCE          remove a wrong link: SOURCE's tokens no longer contribute to TARGET's tokens.
# A word stands for its tokens as they appear after a space in running text; [piece] is exactly one token, written
# as the mapping table shows it (e.g. [▁Jehová] on the target side, [ĠLORD] on the source side).
# Lines starting with # are comments.
"""


class Origin(IntEnum):
    SPECIAL = 0
    IDENTICAL = 1
    ALIGNMENT = 2
    DICTIONARY = 3
    ALIGNMENT_AND_DICTIONARY = 4
    FVT = 5
    MEAN = 6  # nothing at all (e.g. `<unk>` with no source counterpart): the average source embedding
    OVERRIDE = 7  # set by the linguist's overrides file
    KEPT = 8  # vocabulary extension: a source token kept with its own row

    @property
    def label(self) -> str:
        return self.name.lower().replace("_and_", "+")


@dataclass(frozen=True)
class MappingSettings:
    # How much alignment evidence a token needs: pairs seen fewer than `min_pair_count` times dropped, tokens with
    # fewer than `min_token_count` links left to FVT. None (the default): chosen from the corpus's pair length
    # (`alignment_thresholds`), since how much one link is worth depends on it.
    min_pair_count: int | None = None
    min_token_count: int | None = None
    top_k: int = 3  # keep the k heaviest source tokens per target token
    # A dictionary fills in where no parallel corpus has evidence, instead of being mixed into the corpus's rows:
    # mixed, corpus + FreeDict read the held-out text worse than the corpus alone (2.275 against 2.216 bits/byte,
    # README "A dictionary alone"). False mixes every resource by weight.
    dictionary_fills_gaps: bool = True
    # Where the source already reads the language, its own spelling of a token beats the alignment's English rows: a
    # target token the source spells in at most SPELLING_PIECES of its tokens keeps that spelling (its FVT row), and
    # every other aligned token takes this share of its spelling row, the rest from the alignment. None: chosen from
    # the target text (`spelling_share_for`: SPELLING_SHARE for a source that spells it compactly, else 0, off).
    # Measured at step 0 with Gemma 3 270M (docs/results/verbatim.md), FVT · the alignment alone · this: Spanish
    # verses 1.666 · 2.043 · 1.664, German software strings 1.865 · 2.054 · 1.857.
    spelling_share: float | None = None


ALIGNMENT_KIND, DICTIONARY_KIND = "alignment", "dictionary"

# (source tokens a pair, min_token_count, min_pair_count) at the two pair lengths measured (docs/results/
# thresholds.md, SmolLM2, step-0 held-out bits per byte). Bible verses (32 tokens a pair): a token seen a few times
# is linked to whichever frequent English word sits beside it, and few, confident links (20 / 5) beat noisy ones —
# an average of many source rows is a short vector, which a tied head turns into an under-predicted token.
# Software strings (German, Ukrainian, Russian: 6-7 tokens a pair): a link has few candidates, and even one is worth
# more than the token's spelling (2 / 1: 0.85×, 0.83×, 0.87× FVT against 0.89×, 0.92×, 0.98× with 20 / 5).
SHORT_PAIRS, LONG_PAIRS = (8.0, 2, 1), (32.0, 20, 5)


# Source tokens a character of the target text below which the source spells the language compactly, as a vocabulary
# made for it does (about 0.25): Gemma 3 270M spends 0.28 on Spanish, 0.30 on German; SmolLM2 0.40 and 0.42, and
# 0.81 on Ukrainian (docs/results/advise.md). core.advise's "compact" is the same line.
COMPACT_SPELLING = 0.33
# Chosen on Gemma 3 270M (docs/results/verbatim.md): the one variant that read better than FVT on the Spanish
# sample, all the Spanish held-out text and German. Only the tokens spelled whole kept, the others 3/4 spelling: 1.804
# on the sample and 1.838 on German, but 1.667 on all the Spanish (FVT 1.666); ≤ 2 pieces kept, the others from the
# alignment alone: 1.801, 1.862.
SPELLING_PIECES, SPELLING_SHARE = 2, 0.5
SPELLING_SAMPLE_BYTES = 12_000


def spelling_share_for(source_tokenizer, text: str) -> float:
    """`MappingSettings.spelling_share` from the data: SPELLING_SHARE where the source spells a sample of the target
    text compactly (it reads the language), else 0."""
    sample = head_bytes(text, SPELLING_SAMPLE_BYTES)
    if not sample:
        return 0.0
    tokens = sum(len(ids) for ids in source_tokenizer(sample.splitlines(), add_special_tokens=False)["input_ids"])
    return SPELLING_SHARE if tokens / len(sample) <= COMPACT_SPELLING else 0.0


def alignment_thresholds(tokens_per_pair: float) -> tuple[int, int]:
    """(min_token_count, min_pair_count) for a corpus whose pairs hold `tokens_per_pair` source tokens on average:
    the short-pair thresholds up to SHORT_PAIRS' length, the long-pair ones from LONG_PAIRS' (and when the length is
    unknown, 0), geometrically in between (not measured there)."""
    (short, *low), (long, *high) = SHORT_PAIRS, LONG_PAIRS
    f = min(1.0, max(0.0, math.log(tokens_per_pair / short) / math.log(long / short))) if tokens_per_pair else 1.0
    return tuple(round(a * (b / a) ** f) for a, b in zip(low, high))


@dataclass(frozen=True)
class Evidence:
    """One translation resource's raw links, target tokens × source tokens: alignment link counts of one parallel
    corpus, or dictionary entry weights. `name` labels its share in the coverage report and the mapping table."""

    name: str
    kind: str  # ALIGNMENT_KIND | DICTIONARY_KIND
    counts: sp.csr_matrix
    weight: float = 1.0
    tokens_per_pair: float = 0.0  # an aligned corpus's mean source tokens a pair (0: unknown): its thresholds


def dictionary_evidence(
    entries: list[DictionaryEntry],
    source_tokenizer,
    target_tokenizer,
    *,
    name: str = DICTIONARY_KIND,
    weight: float = 1.0,
    language: str = "",
    settings: DictionarySettings | None = None,
) -> Evidence:
    """A dictionary's evidence (`core.dictionary.word_counts`): only target tokens that are whole words (a dictionary
    word, an inflected form of one, a cognate) get it, every other token keeps its spelling (FVT) row. Without
    `settings`, the target `language` code chooses them (`DictionarySettings.for_language`: plural endings, stemmer);
    no code keeps the defaults measured on Spanish."""
    settings = settings or DictionarySettings.for_language(language)
    return Evidence(name, DICTIONARY_KIND, word_counts(entries, source_tokenizer, target_tokenizer, settings), weight)


@dataclass
class Mapping:
    matrix: sp.csr_matrix  # (target vocab, source vocab), rows sum to 1 (MEAN rows are empty)
    origin: np.ndarray  # Origin per target token
    parts: dict[str, sp.csr_matrix] = field(default_factory=dict)  # name → its weights; they sum to `matrix`

    def coverage(self) -> dict[str, int]:
        counts = np.bincount(self.origin, minlength=len(Origin))
        return {o.label: int(counts[o]) for o in Origin}

    def shares(self) -> dict[str, dict[str, float]]:
        """Per part: how many target tokens draw on it and its share of all the weight in the mapping."""
        total = max(float(self.matrix.sum()), 1e-12)
        return {
            name: {"tokens": int((np.diff(part.indptr) > 0).sum()), "share": round(float(part.sum()) / total, 4)}
            for name, part in self.parts.items()
        }

    def save(self, out_dir: str | Path, target_tokenizer, source_tokenizer, top: int = 10) -> None:
        from safetensors.numpy import save_file

        m = sp.csr_matrix(self.matrix)
        m.sort_indices()
        tensors = {"origin": self.origin.astype(np.int8), **_csr_arrays("", m)}
        names = list(self.parts)
        for i, name in enumerate(names):
            tensors.update(_csr_arrays(f"part{i}.", self.parts[name]))
        # Each part's weight at each stored (target, source) entry of the matrix, for the table's provenance.
        keys = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * m.shape[1] + m.indices
        by_part = np.zeros((len(names), m.nnz), dtype=np.float32)
        for i, part in enumerate(self.parts.values()):
            part = sp.coo_matrix(part)
            at = np.searchsorted(keys, part.row.astype(np.int64) * m.shape[1] + part.col)
            by_part[i, np.minimum(at, m.nnz - 1)] += part.data  # a part's entries all lie in the matrix's pattern
        with atomic_dir(out_dir) as tmp:
            save_file(tensors, str(tmp / MATRIX_FILE), metadata={"parts": json.dumps(names)})
            target_pieces = target_tokenizer.convert_ids_to_tokens(list(range(m.shape[0])))
            with open(tmp / TABLE_FILE, "w", encoding="utf-8") as f:
                for t in range(m.shape[0]):
                    lo, hi = m.indptr[t], m.indptr[t + 1]
                    order = np.argsort(-m.data[lo:hi], kind="stable")[:top]
                    ids = m.indices[lo:hi][order].tolist()
                    sources = [
                        [source_tokenizer.convert_ids_to_tokens(s), s, round(float(w), 4)]
                        for s, w in zip(ids, m.data[lo:hi][order])
                    ]
                    provenance = [
                        {n: round(float(v), 4) for n, v in zip(names, by_part[:, lo + k]) if v} for k in order
                    ]
                    f.write(
                        json.dumps(
                            {
                                "id": t,
                                "token": target_pieces[t],
                                "origin": Origin(self.origin[t]).label,
                                "sources": sources,
                                "from": provenance,
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
            (tmp / COVERAGE_FILE).write_text(
                json.dumps({"origins": self.coverage(), "resources": self.shares()}, indent=2)
            )

    @staticmethod
    def load(folder: str | Path) -> "Mapping":
        from safetensors.numpy import load_file

        path = Path(folder) / MATRIX_FILE
        if not path.exists():
            raise TweetyError("no mapping here", path=path, fix="run `tweety map` first")
        from safetensors import safe_open

        t = load_file(str(path))
        with safe_open(str(path), "numpy") as f:
            names = json.loads((f.metadata() or {}).get("parts", "[]"))
        parts = {name: _csr_from(t, f"part{i}.") for i, name in enumerate(names)}
        return Mapping(_csr_from(t, ""), t["origin"].astype(np.int64), parts)


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(m)
    return {
        f"{prefix}indptr": m.indptr.astype(np.int64),
        f"{prefix}indices": m.indices.astype(np.int64),
        f"{prefix}data": m.data.astype(np.float32),
        f"{prefix}shape": np.asarray(m.shape, np.int64),
    }


def _csr_from(t: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix(
        (t[f"{prefix}data"], t[f"{prefix}indices"], t[f"{prefix}indptr"]),
        shape=tuple(int(x) for x in t[f"{prefix}shape"]),
    )


# --- source tokens for a byte string ------------------------------------------------------------------------------


class SourceBytes:
    """Tokenizes raw UTF-8 bytes with the source model's own vocabulary.

    Works at the level of the tokenizer's model (BPE/Unigram), after pre-tokenization, so a target piece that is a
    single UTF-8 byte or a leading-space word maps exactly: byte-level BPE sources (GPT-2 style: SmolLM2, Llama 3)
    see bytes as their printable stand-ins (`Ġ` = space), SentencePiece-style sources (Llama 2, Mistral) see `▁`
    for spaces and `<0xNN>` byte pieces."""

    def __init__(self, source_tokenizer):
        backend = source_tokenizer.backend_tokenizer
        self._model = backend.model
        self._vocab = backend.get_vocab()
        self.byte_level = is_byte_level(source_tokenizer)
        if self.byte_level:
            self._byte_char = byte_level_chars()

    def __call__(self, data: bytes) -> list[int]:
        if not data:
            return []
        if self.byte_level:
            surface = "".join(self._byte_char[b] for b in data)
            return [t.id for t in self._model.tokenize(surface)]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a lone byte piece: use the source's own byte pieces
            ids = [self._vocab.get(f"<0x{b:02X}>") for b in data]
            return [i for i in ids if i is not None]
        return [t.id for t in self._model.tokenize(text.replace(" ", "▁"))]


# --- building the mapping ----------------------------------------------------------------------------------------


def _has_letter(data: bytes) -> bool:
    text = data.decode("utf-8", errors="ignore")
    return any(unicodedata.category(c).startswith("L") for c in text)


def _normalise_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    totals = np.asarray(m.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    return sp.csr_matrix(sp.diags(scale) @ m, dtype=np.float64)


def _top_k(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    m = m.tocsr()
    keep = np.ones(m.nnz, dtype=bool)
    lengths = np.diff(m.indptr)
    for t in np.flatnonzero(lengths > k):  # one pass over the (few) long rows only
        lo, hi = m.indptr[t], m.indptr[t + 1]
        drop = np.argsort(-m.data[lo:hi], kind="stable")[k:]
        keep[lo + drop] = False
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


def fvt_rows(
    target_tokenizer, source_tokenizer, report: Reporter | None = None
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """FVT matrix (each target token → its own bytes in source tokens, equal weights), plus which target tokens are
    special (mapped 1:1) and which have no letters (language-neutral)."""
    to_source = SourceBytes(source_tokenizer)
    target_byte_level = is_byte_level(target_tokenizer)  # an extended byte-level vocabulary (core.extend)
    source_vocab = source_tokenizer.get_vocab()
    specials = set(target_tokenizer.all_special_tokens) | {
        t.content for t in getattr(target_tokenizer, "added_tokens_decoder", {}).values()
    }
    vt = len(target_tokenizer)
    pieces = target_tokenizer.convert_ids_to_tokens(list(range(vt)))
    rows, cols, vals = [], [], []
    is_special = np.zeros(vt, dtype=bool)
    no_letters = np.zeros(vt, dtype=bool)
    for t, piece in enumerate(pieces):
        if report is not None and t % 4096 == 0:
            report(t, vt, "matching token strings")
        if piece in specials:
            if piece in source_vocab:
                is_special[t] = True
                rows.append(t), cols.append(source_vocab[piece]), vals.append(1.0)
            continue  # a special token the source lacks (`<unk>`): no evidence, falls back to the mean
        data = piece_bytes(piece, target_byte_level)
        ids = to_source(data)
        no_letters[t] = not _has_letter(data)
        rows.extend([t] * len(ids))
        cols.extend(ids)
        vals.extend([1.0 / len(ids)] * len(ids) if ids else [])
    m = sp.csr_matrix((vals, (rows, cols)), shape=(vt, len(source_tokenizer)), dtype=np.float64)
    m.sum_duplicates()  # a piece like "aaa" may contain one source token twice
    return m, is_special, no_letters


def _normalised_evidence(e: Evidence, shape: tuple[int, int], settings: MappingSettings) -> sp.csr_matrix:
    if e.counts.shape != shape:
        raise TweetyError(
            f"the {e.kind} counts of {e.name!r} are for vocabularies {e.counts.shape}, but the tokenizers have {shape}",
            fix="re-run `tweety align` with this tokenizer and source model",
        )
    if not e.weight >= 0:
        raise TweetyError(f"the weight of {e.name!r} is {e.weight}", fix="give resources weights of 0 or more")
    a = e.counts.tocsr().astype(np.float64)
    if e.kind == ALIGNMENT_KIND:
        min_token, min_pair = alignment_thresholds(e.tokens_per_pair)
        min_token = min_token if settings.min_token_count is None else settings.min_token_count
        min_pair = min_pair if settings.min_pair_count is None else settings.min_pair_count
        log.info(
            "%s (%.1f source tokens a pair): token pairs seen at least %d times, tokens with at least %d links",
            e.name,
            e.tokens_per_pair,
            min_pair,
            min_token,
        )
        a.data[a.data < min_pair] = 0
        a.eliminate_zeros()
        enough = np.asarray(a.sum(axis=1)).ravel() >= min_token
        a = sp.csr_matrix(sp.diags(enough.astype(np.float64)) @ a)
    return _normalise_rows(_top_k(a, settings.top_k))


def _row_scale(m: sp.csr_matrix, scale: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(sp.diags(scale) @ m)


def build_mapping(
    source_tokenizer,
    target_tokenizer,
    *,
    alignment_counts: sp.csr_matrix | None = None,
    dictionary: list[DictionaryEntry] | None = None,
    evidence: Sequence[Evidence] = (),
    overrides: Sequence[OverrideLine] = (),
    settings: MappingSettings = MappingSettings(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Mapping:
    """The mapping from every translation resource in `evidence` (plus the `alignment_counts`/`dictionary`
    shorthands for one of each), corrected by the linguist's `overrides` (`core.resources.read_overrides`)."""
    report = Reporter(progress, cancel, "Mapping")
    vt, vs = len(target_tokenizer), len(source_tokenizer)
    evidence = list(evidence)
    if alignment_counts is not None:
        evidence.insert(0, Evidence(ALIGNMENT_KIND, ALIGNMENT_KIND, alignment_counts))
    if dictionary:
        evidence.append(dictionary_evidence(dictionary, source_tokenizer, target_tokenizer))
    names = [e.name for e in evidence]
    if len(set(names)) != len(names) or {OVERRIDE, FALLBACK} & set(names):
        raise TweetyError(
            f"resource names must be distinct and not {OVERRIDE!r}/{FALLBACK!r} (got {names})",
            fix="name each resource differently",
        )
    fvt, is_special, no_letters = fvt_rows(target_tokenizer, source_tokenizer, report)
    report(vt, vt, "combining evidence")
    replaced, removed = resolve_overrides(overrides, source_tokenizer, target_tokenizer)

    def without_removed(m: sp.csr_matrix) -> sp.csr_matrix:
        if removed is None:
            return m
        m = sp.csr_matrix(m - m.multiply(removed))
        m.eliminate_zeros()
        return m

    # Each resource's normalised rows times its weight; together renormalised per token, so that a token the
    # dictionary alone knows gets the dictionary's distribution whatever the weights.
    weighted = [without_removed(_normalised_evidence(e, (vt, vs), settings)) * e.weight for e in evidence]
    for w in weighted:
        w.eliminate_zeros()  # a resource of weight 0 leaves no trace (not even in the origins)
    if settings.dictionary_fills_gaps:
        aligned = np.zeros(vt, dtype=bool)
        for e, w in zip(evidence, weighted):
            if e.kind == ALIGNMENT_KIND:
                aligned |= np.diff(w.indptr) > 0
        weighted = [
            _row_scale(w, (~aligned).astype(np.float64)) if e.kind == DICTIONARY_KIND else w
            for e, w in zip(evidence, weighted)
        ]
        for w in weighted:
            w.eliminate_zeros()
    totals = sum((np.asarray(w.sum(axis=1)).ravel() for w in weighted), np.zeros(vt))
    has_evidence = totals > 0
    inverse = np.divide(1.0, totals, out=np.zeros(vt), where=has_evidence)
    weighted = [_row_scale(w, inverse) for w in weighted]
    kinds = {kind: np.zeros(vt, dtype=bool) for kind in (ALIGNMENT_KIND, DICTIONARY_KIND)}
    for e, w in zip(evidence, weighted):
        kinds[e.kind] |= np.diff(w.indptr) > 0

    origin = np.full(vt, Origin.FVT, dtype=np.int64)
    origin[kinds[ALIGNMENT_KIND]] = Origin.ALIGNMENT
    origin[kinds[DICTIONARY_KIND]] = Origin.DICTIONARY
    origin[kinds[ALIGNMENT_KIND] & kinds[DICTIONARY_KIND]] = Origin.ALIGNMENT_AND_DICTIONARY
    aligned = np.isin(origin, [Origin.ALIGNMENT, Origin.ALIGNMENT_AND_DICTIONARY]) & ~no_letters
    share = settings.spelling_share or 0.0
    if share:  # a token the source spells in few pieces keeps that spelling
        origin[aligned & (np.diff(fvt.indptr) <= SPELLING_PIECES)] = Origin.FVT
    origin[no_letters] = Origin.IDENTICAL
    fvt = _normalise_rows(without_removed(fvt))
    origin[np.diff(fvt.indptr) == 0] = Origin.MEAN
    origin[is_special] = Origin.SPECIAL
    use_evidence = np.isin(origin, [Origin.ALIGNMENT, Origin.DICTIONARY, Origin.ALIGNMENT_AND_DICTIONARY])
    overridden = np.diff(replaced.indptr) > 0
    origin[overridden] = Origin.OVERRIDE
    use_evidence &= ~overridden
    fallback = ~use_evidence & ~overridden

    spelled = np.where(use_evidence & aligned, share, 0.0)  # the spelling's share of an aligned token's row
    parts = {e.name: _row_scale(w, use_evidence * (1.0 - spelled)) for e, w in zip(evidence, weighted)}
    parts[OVERRIDE] = replaced
    parts[FALLBACK] = _row_scale(fvt, fallback + spelled)
    parts = {name: _float32(part) for name, part in parts.items()}
    matrix = _float32(sum(parts.values(), sp.csr_matrix((vt, vs), dtype=np.float32)))
    return Mapping(matrix, origin, parts)


def _float32(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _token_ids(tokenizer, text: str, vocab: dict[str, int]) -> list[int] | None:
    """`[piece]` is exactly that token (None when the vocabulary lacks it); anything else is the tokens of the
    text as it appears after a space in running text."""
    if len(text) > 2 and text[0] == "[" and text[-1] == "]":
        token = vocab.get(text[1:-1])
        return None if token is None else [token]
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


def resolve_overrides(
    overrides: Sequence[OverrideLine], source_tokenizer, target_tokenizer
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """(replacement rows, normalised; a 0/1 matrix of removed links or None) from the overrides file's lines."""
    vt, vs = len(target_tokenizer), len(source_tokenizer)
    target_vocab, source_vocab = target_tokenizer.get_vocab(), source_tokenizer.get_vocab()
    add: dict[tuple[int, int], float] = {}
    remove: set[tuple[int, int]] = set()
    for o in overrides:
        targets = _token_ids(target_tokenizer, o.target, target_vocab)
        sources = _token_ids(source_tokenizer, o.source, source_vocab)
        for ids, side, text in ((targets, "target", o.target), (sources, "source", o.source)):
            if not ids:
                raise TweetyError(
                    f"the {side} {text!r} is not a token of the {side} vocabulary"
                    if ids is None
                    else f"the {side} {text!r} has no tokens",
                    path=o.path,
                    line=o.line,
                    fix="write a word, or [piece] exactly as the mapping table shows it",
                )
        for t in targets:
            for s in sources:
                if o.remove:
                    remove.add((t, s))
                else:
                    add[t, s] = add.get((t, s), 0.0) + o.weight / len(sources)
    replaced = _normalise_rows(_coo(add.keys(), add.values(), (vt, vs)))
    removed = _coo(remove, [1.0] * len(remove), (vt, vs)) if remove else None
    return replaced, removed


def _coo(keys, values, shape: tuple[int, int]) -> sp.csr_matrix:
    keys = list(keys)
    rows = [t for t, _ in keys]
    cols = [s for _, s in keys]
    return sp.csr_matrix((list(values), (rows, cols)), shape=shape, dtype=np.float64)


def fvt_mapping(source_tokenizer, target_tokenizer) -> Mapping:
    """The FVT baseline: every target token from its own bytes (specials still 1:1)."""
    return build_mapping(source_tokenizer, target_tokenizer)
