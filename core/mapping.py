"""Mapping: for every target token, a probability distribution over source tokens.

Evidence, in order of authority:
1. special tokens map 1:1 onto the same source token (`<|im_end|>` → `<|im_end|>`);
2. tokens without letters (numbers, punctuation, whitespace, raw bytes) map onto the source tokens of the very same
   UTF-8 bytes — language-neutral, and exact even for a byte-level BPE source (`é` → `Ã©`, `<0x0A>` → `Ċ`);
3. alignment link counts (pairs seen fewer than `min_pair_count` times are dropped, tokens with fewer than
   `min_token_count` links get no alignment evidence) and dictionary entries, each normalised per token and mixed
   by weight;
4. otherwise FVT: the source tokenization of the target token's own bytes.
The result is a sparse row-stochastic matrix (target vocab × source vocab): every operation is a sparse matrix
operation or one pass over the target vocabulary, so 128k-token vocabularies are fine (no O(V²) work).
"""
from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir
from core.resources import DictionaryEntry
from core.tokenizer import piece_bytes

log = logging.getLogger(__name__)

MATRIX_FILE = "mapping.safetensors"
TABLE_FILE = "mapping.jsonl"
COVERAGE_FILE = "coverage.json"


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
    # Measured on the demo corpus (held-out BPB at step 0): few, confident links beat broad distributions — an
    # average of many source rows is a short vector, which a tied LM head turns into an under-predicted token.
    # Rare tokens are better served by FVT than by a handful of noisy links.
    min_pair_count: int = 5
    min_token_count: int = 20
    top_k: int = 3  # keep the k heaviest source tokens per target token
    alignment_weight: float = 1.0
    dictionary_weight: float = 1.0


@dataclass
class Mapping:
    matrix: sp.csr_matrix  # (target vocab, source vocab), rows sum to 1 (MEAN rows are empty)
    origin: np.ndarray  # Origin per target token

    def coverage(self) -> dict[str, int]:
        counts = np.bincount(self.origin, minlength=len(Origin))
        return {o.label: int(counts[o]) for o in Origin}

    def save(self, out_dir: str | Path, target_tokenizer, source_tokenizer, top: int = 10) -> None:
        from safetensors.numpy import save_file

        m = self.matrix
        with atomic_dir(out_dir) as tmp:
            save_file({"indptr": m.indptr.astype(np.int64), "indices": m.indices.astype(np.int64),
                       "data": m.data.astype(np.float32), "shape": np.asarray(m.shape, np.int64),
                       "origin": self.origin.astype(np.int8)}, str(tmp / MATRIX_FILE))
            target_pieces = target_tokenizer.convert_ids_to_tokens(list(range(m.shape[0])))
            with open(tmp / TABLE_FILE, "w", encoding="utf-8") as f:
                for t in range(m.shape[0]):
                    lo, hi = m.indptr[t], m.indptr[t + 1]
                    order = np.argsort(-m.data[lo:hi], kind="stable")[:top]
                    ids = m.indices[lo:hi][order].tolist()
                    sources = [[source_tokenizer.convert_ids_to_tokens(s), s, round(float(w), 4)]
                               for s, w in zip(ids, m.data[lo:hi][order])]
                    f.write(json.dumps({"id": t, "token": target_pieces[t], "origin": Origin(self.origin[t]).label,
                                        "sources": sources}, ensure_ascii=False) + "\n")
            (tmp / COVERAGE_FILE).write_text(json.dumps(self.coverage(), indent=2))

    @staticmethod
    def load(folder: str | Path) -> "Mapping":
        from safetensors.numpy import load_file

        path = Path(folder) / MATRIX_FILE
        if not path.exists():
            raise TweetyError("no mapping here", path=path, fix="run `tweety map` first")
        t = load_file(str(path))
        matrix = sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=tuple(int(x) for x in t["shape"]))
        return Mapping(matrix, t["origin"].astype(np.int64))


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
        pre = repr(backend.pre_tokenizer) + repr(backend.decoder)
        self.byte_level = "ByteLevel" in pre
        if self.byte_level:
            from tokenizers.pre_tokenizers import ByteLevel

            alphabet = ByteLevel.alphabet()  # the 256 printable stand-ins, in no particular order
            # GPT-2's table: printable Latin-1 bytes stand for themselves, the rest for chr(256 + k).
            printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
            table, extra = {}, 0
            for b in range(256):
                if b in printable:
                    table[b] = chr(b)
                else:
                    table[b] = chr(256 + extra)
                    extra += 1
            assert set(table.values()) == set(alphabet)
            self._byte_char = table

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


def _dictionary_counts(entries: list[DictionaryEntry], source_tokenizer, target_tokenizer,
                       shape: tuple[int, int]) -> sp.csr_matrix:
    """Each entry links every target token of the target word to every source token of the source word;
    an entry's weight is spread evenly so that long words do not outvote short ones."""
    if not entries:
        return sp.csr_matrix(shape, dtype=np.float64)
    # Words appear after a space in running text, so that is the form whose tokens we want on both sides.
    tgt = target_tokenizer([" " + e.target for e in entries], add_special_tokens=False)["input_ids"]
    src = source_tokenizer([" " + e.source for e in entries], add_special_tokens=False)["input_ids"]
    rows, cols, vals = [], [], []
    for e, t_ids, s_ids in zip(entries, tgt, src):
        if not t_ids or not s_ids:
            continue
        w = e.weight / (len(t_ids) * len(s_ids))
        for t in t_ids:
            rows.extend([t] * len(s_ids))
            cols.extend(s_ids)
            vals.extend([w] * len(s_ids))
    return sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float64)


def fvt_rows(target_tokenizer, source_tokenizer, report: Reporter | None = None
             ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """FVT matrix (each target token → its own bytes in source tokens, equal weights), plus which target tokens are
    special (mapped 1:1) and which have no letters (language-neutral)."""
    to_source = SourceBytes(source_tokenizer)
    source_vocab = source_tokenizer.get_vocab()
    specials = set(target_tokenizer.all_special_tokens) | {
        t.content for t in getattr(target_tokenizer, "added_tokens_decoder", {}).values()}
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
        data = piece_bytes(piece)
        ids = to_source(data)
        no_letters[t] = not _has_letter(data)
        rows.extend([t] * len(ids))
        cols.extend(ids)
        vals.extend([1.0 / len(ids)] * len(ids) if ids else [])
    m = sp.csr_matrix((vals, (rows, cols)), shape=(vt, len(source_tokenizer)), dtype=np.float64)
    m.sum_duplicates()  # a piece like "aaa" may contain one source token twice
    return m, is_special, no_letters


def build_mapping(source_tokenizer, target_tokenizer, *, alignment_counts: sp.csr_matrix | None = None,
                  dictionary: list[DictionaryEntry] | None = None, settings: MappingSettings = MappingSettings(),
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Mapping:
    report = Reporter(progress, cancel, "Mapping")
    vt, vs = len(target_tokenizer), len(source_tokenizer)
    fvt, is_special, no_letters = fvt_rows(target_tokenizer, source_tokenizer, report)
    report(vt, vt, "combining evidence")
    evidence = []
    if alignment_counts is not None:
        if alignment_counts.shape != (vt, vs):
            raise TweetyError(f"the alignment counts are for vocabularies {alignment_counts.shape}, but the tokenizers "
                              f"have ({vt}, {vs})", fix="re-run `tweety align` with this tokenizer and source model")
        a = alignment_counts.tocsr().astype(np.float64)
        a.data[a.data < settings.min_pair_count] = 0
        a.eliminate_zeros()
        totals = np.asarray(a.sum(axis=1)).ravel()
        a = sp.diags((totals >= settings.min_token_count).astype(np.float64)) @ a
        evidence.append((_normalise_rows(_top_k(sp.csr_matrix(a), settings.top_k)), settings.alignment_weight))
    if dictionary:
        d = _dictionary_counts(dictionary, source_tokenizer, target_tokenizer, (vt, vs))
        evidence.append((_normalise_rows(_top_k(d, settings.top_k)), settings.dictionary_weight))
    has = [np.diff(e.indptr) > 0 for e, _ in evidence]
    mixed = sum((w * e for e, w in evidence), sp.csr_matrix((vt, vs), dtype=np.float64))
    mixed = _normalise_rows(sp.csr_matrix(mixed))
    has_evidence = np.diff(mixed.indptr) > 0

    origin = np.full(vt, Origin.FVT, dtype=np.int64)
    if alignment_counts is not None and dictionary:
        origin[has[0] & has[1]] = Origin.ALIGNMENT_AND_DICTIONARY
        origin[has[0] & ~has[1]] = Origin.ALIGNMENT
        origin[~has[0] & has[1]] = Origin.DICTIONARY
    elif evidence:
        origin[has[0]] = Origin.ALIGNMENT if alignment_counts is not None else Origin.DICTIONARY
    origin[no_letters] = Origin.IDENTICAL
    origin[np.diff(fvt.indptr) == 0] = Origin.MEAN
    origin[is_special] = Origin.SPECIAL
    use_mixed = np.isin(origin, [Origin.ALIGNMENT, Origin.DICTIONARY, Origin.ALIGNMENT_AND_DICTIONARY]) & has_evidence
    matrix = sp.diags(use_mixed.astype(np.float64)) @ mixed + sp.diags((~use_mixed).astype(np.float64)) @ fvt
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return Mapping(matrix, origin)


def fvt_mapping(source_tokenizer, target_tokenizer) -> Mapping:
    """The FVT baseline: every target token from its own bytes (specials still 1:1)."""
    return build_mapping(source_tokenizer, target_tokenizer)
