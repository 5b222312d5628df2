"""Vocabulary extension: keep every source token, add target-language tokens initialised by trans-tokenization — the
alternative to replacing the vocabulary. The tokenizer, keep-rows and penalty parts live here; core.stages runs
them in the one stage sequence (`tweety extend`, the wizard's Extend choice).

The new tokens come from BPE training continued on top of the source tokenizer. The target text is pre-tokenized with
the source tokenizer's own pre-tokenizer; every distinct word starts as its source tokens; then the most frequent
adjacent pair (ties: the smaller ids) is merged into a new token, again and again. Each merge is appended after all
source merges and each new token after all source ids, so the extended tokenizer is the source tokenizer with merges
that rank last: BPE applies the lowest-ranked applicable merge first, so a new merge only fires on a word once no
source merge applies, i.e. once the word is in its source tokenization.

Source-language text keeps its tokenization exactly: no pair adjacent in the source tokenization of a "protected"
line (the parallel corpus's source side) is ever merged — the extended tokenizer reaches each protected word's source
tokenization exactly as before, and from there a new merge could only fire on an adjacent pair, all of which are
forbidden. (New tokens spelling a whole protected word are forbidden too: with `ignore_merges`, as in Llama 3, a
word that is a token skips the merges.) Source-language words the protected text lacks can still change when the
target text shares them (demo, 8,000 new tokens: 3 of the 661 held-out English verses, by names such as `Agar`, and
`diest`, which `diestra` also starts with). New tokens also never contain a digit: llama.cpp's pre-tokenizers for these
models cut digits apart (one by one, or in threes), so such a token could tokenize differently after GGUF export.

Two kinds of BPE sources. Byte-level BPE (SmolLM2, Llama 3, Qwen): words come from the source's pre-tokenizer, the
extended vocabulary exports to GGUF with its merges (llama.cpp's `gpt2` vocabulary). SentencePiece-style BPE with byte
fallback (Gemma, Llama 2, Mistral, Tower: `▁` word starts, `<0xNN>` byte pieces): the tokenizer sees a whole line as
one word, so words are split before each `▁` here (`_Words`; a source piece spanning a word start, Gemma's `>▁</`,
keeps its words together); byte pieces are never merged (a merge's text would be `<0xC3>a`); and since llama.cpp's
SentencePiece tokenizer joins any two adjacent pieces that spell a piece, best score first, rather than reading merges,
a new piece may not complete a source piece, every split of a new piece is a merge, and the concatenation of every
pair adjacent in protected text is forbidden as a new piece (`_SentencePieceRules`). Gemma 3 270M, 300 new tokens
from 400 verse pairs: English tokenizes as before, Spanish needs 3.0% fewer tokens on held-out books (12.6% on the
training verses: Gemma's 262k vocabulary already reads Spanish well), llama.cpp tokenizes as transformers.

Then the usual stages with the extended tokenizer as the target tokenizer: align, map, init. Every source token keeps
its own row (origin `kept`); only the new tokens get trans-tokenized rows, so on source-language text the extended
model computes the source model's logits (plus one column per new token).

Those extra columns compete with the source tokens: a new token aligned to `Ġhouse` gets `Ġhouse`'s row, so in
English text it scores exactly as high and halves `Ġhouse`'s probability (demo: English bits per byte +15%). So every
new row also gets one shared offset vector `-source_penalty * w`, where `w` is a linear probe of the source model's
last hidden states (ridge regression: h·w ≈ 1 on source-language text, ≈ 0 on target-language text): a new token
scores `source_penalty` nats lower where the text is in the source language and about the same where it is in the
target language (demo, 4 nats: English bits per byte +0.5% of the source model's instead of +15%; Spanish 2.299
instead of 2.271). Lowering or raising new tokens in target-language text too only made Spanish worse.
"""

from __future__ import annotations

import bisect
import heapq
import json
import logging
import re
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core import mapping, models
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir
from core.tokenizer import SPACE, encode_many, enough_lines, is_byte_level, load_tokenizer, piece_bytes

log = logging.getLogger(__name__)

STATS_FILE = "extension.json"
KEPT_PART = "kept"  # the mapping part holding the source tokens' own rows


@dataclass(frozen=True)
class ExtensionSettings:
    # Measured on the demo corpus (benchmarks/extension.py): 8,000 new tokens cut Spanish tokens per byte by 36%
    # (as many as the 16k replacement vocabulary); 4,000 by 31%, 16,000 by 38%.
    new_tokens: int = 8000
    min_frequency: int = 2  # a pair seen fewer times in the target text is never merged
    max_lines: int = 2_000_000  # of target text (and of protected text), the first this many lines
    # How many nats lower a new token scores in source-language text (0: plain trans-tokenized rows). Measured on
    # the demo (benchmarks/extension.py): with 4, English bits per byte is 0.5% above the source model's instead of
    # 15%, Spanish 1.2% above plain rows; 8 leaves English unchanged but costs Spanish 4%.
    source_penalty: float = 4.0

    def check(self) -> None:
        if self.new_tokens < 1 or self.min_frequency < 1 or self.max_lines < 1:
            raise TweetyError("new_tokens, min_frequency and max_lines must be at least 1")
        if not self.source_penalty >= 0:
            raise TweetyError(f"the source-language penalty is {self.source_penalty}", fix="use a value ≥ 0")


@dataclass(frozen=True)
class ExtensionStats:
    source_vocab: int
    new_tokens: int
    merges: int  # new merges; a few give a token the vocabulary already has
    target_words: int  # distinct pre-tokenized words of the target text
    protected_words: int
    forbidden_pairs: int
    seconds: float


def check_extensible(source_tokenizer) -> dict:
    """The source tokenizer's tokenizer.json as a dict, if its model is byte-level BPE (SmolLM2, Llama 3, Qwen) or
    SentencePiece-style BPE with byte fallback (Gemma, Llama 2, Mistral, Tower); refused otherwise."""
    backend = getattr(source_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TweetyError(
            "the source model has no fast (tokenizer.json) tokenizer, so its vocabulary cannot be extended",
            fix="adapt it by replacing the vocabulary",
        )
    spec = json.loads(backend.to_str())
    model = spec["model"]
    if model.get("type") != "BPE":
        raise TweetyError(
            f"the source tokenizer is a {model.get('type')} model; vocabulary extension continues BPE "
            "training, so it needs a BPE tokenizer",
            fix="adapt this model by replacing the vocabulary",
        )
    if not is_byte_level(source_tokenizer) and not model.get("byte_fallback"):
        raise TweetyError(
            "the source tokenizer is BPE but neither byte-level (SmolLM2, Llama 3, Qwen) nor "
            "SentencePiece-style with byte fallback (Gemma, Llama 2, Mistral), so some text could not "
            "be tokenized by the extended vocabulary",
            fix="adapt this model by replacing the vocabulary",
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") or model.get("dropout"):
        raise TweetyError(
            "the source tokenizer's BPE uses subword prefixes/suffixes or dropout, which vocabulary "
            "extension does not support",
            fix="adapt this model by replacing the vocabulary",
        )
    if max(backend.get_vocab().values()) + 1 != len(source_tokenizer):
        raise TweetyError(
            "the source tokenizer's ids have gaps, so new tokens cannot be appended after them",
            fix="adapt this model by replacing the vocabulary",
        )
    return spec


class _Words:
    """Splits text into the words BPE training counts, as the source tokenizer would see them.

    Byte-level sources: the source's own pre-tokenizer. SentencePiece-style sources: their pre-tokenizer (if any)
    keeps a whole line as one word (Gemma splits on a space its normalizer has already turned into `▁`), so we split
    again before every `▁` that follows another character (a run of `▁` stays one word start). That is exactly how
    the source tokenizes a line only if no source merge crosses such a boundary: Gemma 3 has one piece that does
    (`>▁</`), so a boundary inside an occurrence of such a piece is never split. Added tokens (special tokens,
    Gemma's `\n` runs and HTML tags) are cut out first, as the tokenizer matches them before its model sees the text.
    """

    def __init__(self, source_tokenizer, byte_level: bool, pieces: list[str]) -> None:
        backend = source_tokenizer.backend_tokenizer
        self.normalizer, self.pre = backend.normalizer, backend.pre_tokenizer
        self.byte_level = byte_level
        added = sorted(
            {t.content for t in backend.get_added_tokens_decoder().values() if t.content}, key=len, reverse=True
        )
        self.added = re.compile("|".join(map(re.escape, added))) if added else None
        crossing = sorted({p for p in pieces if _SPACE_INSIDE.search(p)}, key=len, reverse=True)
        if len(crossing) > 1000:
            raise TweetyError(
                f"{len(crossing):,} of the source tokenizer's pieces span a word start (`▁` inside a "
                "piece), so its words cannot be told apart",
                fix="adapt this model by replacing the vocabulary",
            )
        self.crossing = re.compile("(?=(" + "|".join(map(re.escape, crossing)) + "))") if crossing else None

    def __call__(self, line: str) -> list[str]:
        segments = self.added.split(line) if self.added else [line]
        words = []
        for segment in segments:
            if not segment:
                continue
            if self.normalizer is not None:
                segment = self.normalizer.normalize_str(segment)
            chunks = [w for w, _ in self.pre.pre_tokenize_str(segment)] if self.pre is not None else [segment]
            words.extend(chunks if self.byte_level else (w for chunk in chunks for w in self._split(chunk)))
        return words

    def _split(self, chunk: str) -> list[str]:
        starts = [m.start() for m in _WORD_START.finditer(chunk)]
        if not starts:
            return [chunk]
        if self.crossing is not None:
            inside = set()
            for m in self.crossing.finditer(chunk):
                inside.update(range(m.start() + 1, m.start() + len(m.group(1))))
            starts = [i for i in starts if i not in inside]
        bounds = [0, *starts, len(chunk)]
        return [chunk[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


_WORD_START = re.compile(f"(?<=[^{SPACE}]){SPACE}")  # a `▁` after another character
_SPACE_INSIDE = re.compile(f"[^{SPACE}]{SPACE}")  # a piece that crosses a word start


def _word_counts(words: _Words, lines: list[str], report: Reporter, message: str) -> Counter:
    """Distinct words (in the source tokenizer's piece alphabet) and how often each occurs."""
    counts: Counter = Counter()
    for i, line in enumerate(lines):
        if i % 2000 == 0:
            report(i, len(lines), message)
        counts.update(words(line))
    return counts


def _merge(word: list[int], a: int, b: int, c: int) -> list[int]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(c)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _train_merges(
    words: list[list[int]],
    freqs: list[int],
    pieces: list[str],
    settings: ExtensionSettings,
    forbidden_pairs: set[tuple[int, int]],
    forbidden_pieces: set[str],
    report: Reporter,
    *,
    unmergeable: frozenset[int] = frozenset(),
    refuse=None,
) -> list[tuple[int, int]]:
    """BPE training over distinct words with incremental pair counts: a merge only revisits the words holding its
    pair. Appends the new tokens to `pieces`; returns the merges (id pairs) in order. Pairs holding an `unmergeable`
    id are never merged, nor a pair making a new piece for which `refuse(text, index)` is true."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += f
            where[pair].add(w)
    heap = [(-c, a, b) for (a, b), c in counts.items() if (a, b) not in forbidden_pairs]
    heapq.heapify(heap)
    index = {p: i for i, p in enumerate(pieces)}
    merges: list[tuple[int, int]] = []
    added = 0
    while heap and added < settings.new_tokens:
        negative, a, b = heapq.heappop(heap)
        if counts.get((a, b), 0) != -negative:
            continue  # stale entry: the count changed since (a newer entry holds it)
        if -negative < settings.min_frequency:
            break
        if a in unmergeable or b in unmergeable:
            forbidden_pairs.add((a, b))
            continue
        text = pieces[a] + pieces[b]
        if text in forbidden_pieces:
            forbidden_pairs.add((a, b))
            continue
        c = index.get(text)
        if c is None and refuse is not None and refuse(text, index):
            forbidden_pairs.add((a, b))
            continue
        if c is None:
            c = index[text] = len(pieces)
            pieces.append(text)
            added += 1
            if added % 250 == 0:
                report(added, settings.new_tokens, f"{added:,} new tokens")
        merges.append((a, b))
        changed = set()
        for w in where.pop((a, b)):
            word, f = words[w], freqs[w]
            new = _merge(word, a, b, c)
            old_pairs, new_pairs = list(zip(word, word[1:])), list(zip(new, new[1:]))
            for pair in old_pairs:
                counts[pair] -= f
            for pair in new_pairs:
                counts[pair] += f
            for pair in set(old_pairs) - set(new_pairs):
                if pair != (a, b):
                    where[pair].discard(w)
            for pair in set(new_pairs) - set(old_pairs):
                where[pair].add(w)
            changed.update(old_pairs)
            changed.update(new_pairs)
            words[w] = new
        del counts[(a, b)]
        changed.discard((a, b))
        for pair in changed:
            n = counts[pair]
            if n <= 0:
                del counts[pair]
                where.pop(pair, None)
            elif pair not in forbidden_pairs:
                heapq.heappush(heap, (-n, *pair))
    return merges


def _has_digit(word: str, byte_level: bool) -> bool:
    """Whether a word (in the source's piece alphabet) holds a digit; a SentencePiece-style word is its own text
    (`▁` aside), so `<0xNN>` byte pieces, which are never part of a word's text, cannot count as digits."""
    text = piece_bytes(word, byte_level=True).decode("utf-8", errors="ignore") if byte_level else word
    return any(unicodedata.category(ch).startswith("N") for ch in text)


class _SentencePieceRules:
    """What a SentencePiece-style extension must refuse or add so that llama.cpp tokenizes as transformers does.

    llama.cpp's SentencePiece tokenizer does not read merges: it joins any two adjacent pieces whose concatenation
    is a piece, best score first (the export scores a piece by its first merge's rank). Source tokenizer.json files
    (Gemma's, ours) list every such split as a merge, so both agree. For the new pieces: (1) every split of a new
    piece into two pieces becomes a merge (`all_merges`), not only the one training chose; (2) a new piece is refused
    if it completes a source piece together with another piece (`▁Jeho` + `vá` = `▁Jehová`): llama.cpp would then
    join them at the source piece's score, which no appended merge can say; (3) a new piece never crosses a word start
    (`a▁b`), so the words stay as `_Words` splits them."""

    def __init__(self, pieces: list[str]) -> None:
        self.forward = sorted(pieces)
        self.backward = sorted(p[::-1] for p in pieces)

    def refuse(self, text: str, index: dict[str, int]) -> bool:
        if _SPACE_INSIDE.search(text):
            return True
        i = bisect.bisect_right(self.forward, text)
        while i < len(self.forward) and self.forward[i].startswith(text):
            if self.forward[i][len(text) :] in index:
                return True
            i += 1
        reverse = text[::-1]
        i = bisect.bisect_right(self.backward, reverse)
        while i < len(self.backward) and self.backward[i].startswith(reverse):
            if self.backward[i][len(text) :][::-1] in index:
                return True
            i += 1
        return False

    @staticmethod
    def all_merges(pieces: list[str], first_new: int) -> list[tuple[int, int]]:
        """Every split of each new piece (in the order they were made) into two pieces of the final vocabulary."""
        index = {p: i for i, p in enumerate(pieces)}
        merges = []
        for piece in pieces[first_new:]:
            for k in range(1, len(piece)):
                left, right = index.get(piece[:k]), index.get(piece[k:])
                if left is not None and right is not None:
                    merges.append((left, right))
        return merges


def extend_tokenizer(
    target_lines: list[str],
    protected_lines: list[str],
    source_tokenizer,
    out_dir: str | Path,
    settings: ExtensionSettings = ExtensionSettings(),
    *,
    path: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> ExtensionStats:
    """Write the source tokenizer extended with up to `settings.new_tokens` tokens learnt from `target_lines` (read
    from `path`, named in messages) into `out_dir` (an HF tokenizer folder); `protected_lines` (source-language
    text) keep their tokenization."""
    start = time.monotonic()
    settings.check()
    report = Reporter(progress, cancel, "Extending tokenizer")
    spec = check_extensible(source_tokenizer)
    target_lines = enough_lines(target_lines[: settings.max_lines], path)
    backend = source_tokenizer.backend_tokenizer
    model = backend.model
    vocab = backend.get_vocab()
    pieces = [""] * len(vocab)
    for piece, i in vocab.items():
        pieces[i] = piece
    byte_level = is_byte_level(source_tokenizer)
    words_of = _Words(source_tokenizer, byte_level, pieces)

    # Protected text: every pair adjacent in its source tokenization, and every whole word. A SentencePiece-style
    # source joins any adjacent pieces whose concatenation is a piece (in llama.cpp, see _SentencePieceRules), so
    # there the concatenation of every such pair is forbidden as a new piece too.
    protected = _word_counts(words_of, protected_lines[: settings.max_lines], report, "reading protected text")
    forbidden_pairs: set[tuple[int, int]] = set()
    for word in protected:
        ids = [t.id for t in model.tokenize(word)]
        forbidden_pairs.update(zip(ids, ids[1:]))
    forbidden_pieces = set(protected)
    rules = None
    if not byte_level:
        forbidden_pieces.update(pieces[a] + pieces[b] for a, b in forbidden_pairs)
        rules = _SentencePieceRules(pieces)

    counts = _word_counts(words_of, target_lines, report, "reading target text")
    words, freqs = [], []
    for word, n in counts.items():
        if len(word) > 1 and not _has_digit(word, byte_level):
            words.append([t.id for t in model.tokenize(word)])
            freqs.append(n)
    unmergeable = (
        frozenset()
        if byte_level
        else frozenset(i for i, p in enumerate(pieces) if len(p) == 6 and p.startswith("<0x") and p.endswith(">"))
    )
    merges = _train_merges(
        words,
        freqs,
        pieces,
        settings,
        forbidden_pairs,
        forbidden_pieces,
        report,
        unmergeable=unmergeable,
        refuse=rules.refuse if rules else None,
    )
    if rules is not None:
        merges = rules.all_merges(pieces, len(vocab))
    new_tokens = len(pieces) - len(vocab)

    # tokenizer.json: the source's, with the new tokens and merges appended.
    spec["model"]["vocab"].update({pieces[i]: i for i in range(len(vocab), len(pieces))})
    as_lists = bool(spec["model"]["merges"]) and isinstance(spec["model"]["merges"][0], list)
    spec["model"]["merges"].extend(
        [pieces[a], pieces[b]] if as_lists else f"{pieces[a]} {pieces[b]}" for a, b in merges
    )
    stats = ExtensionStats(
        source_vocab=len(vocab),
        new_tokens=new_tokens,
        merges=len(merges),
        target_words=len(counts),
        protected_words=len(protected),
        forbidden_pairs=len(forbidden_pairs),
        seconds=round(time.monotonic() - start, 2),
    )
    with atomic_dir(out_dir) as tmp:
        source_tokenizer.save_pretrained(tmp)  # special tokens, chat template, config as the source has them
        (tmp / "tokenizer.model").unlink(missing_ok=True)  # the source's SentencePiece model lacks the new pieces
        (tmp / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        (tmp / STATS_FILE).write_text(json.dumps(asdict(stats), indent=2))
        extended = load_tokenizer(tmp)
        _check(extended, source_tokenizer, target_lines[:200], protected_lines[:200], len(pieces))
    report(1, 1, f"{new_tokens:,} new tokens")
    return stats


def _check(extended, source_tokenizer, target_lines: list[str], protected_lines: list[str], size: int) -> None:
    """Bugs, not user errors: the saved tokenizer has every token, round-trips text and keeps protected text."""
    if len(extended) != size:
        raise RuntimeError(f"extended tokenizer has {len(extended)} tokens, expected {size}")
    for line in target_lines:
        if extended.decode(extended(line, add_special_tokens=False)["input_ids"]) != line:
            raise RuntimeError(f"extended tokenizer does not round-trip {line!r}")
    for line in protected_lines:
        if extended(line)["input_ids"] != source_tokenizer(line)["input_ids"]:
            raise RuntimeError(f"extended tokenizer changed the tokenization of {line!r}")


def keep_source_rows(m: mapping.Mapping, source_vocab: int) -> mapping.Mapping:
    """`m` with every source token mapped onto itself (origin `kept`); the new tokens' rows stay as computed."""
    vt, vs = m.matrix.shape
    new_rows = sp.diags(np.r_[np.zeros(source_vocab), np.ones(vt - source_vocab)])
    identity = sp.csr_matrix(
        (np.ones(source_vocab, np.float32), (np.arange(source_vocab), np.arange(source_vocab))), shape=(vt, vs)
    )
    parts = {name: sp.csr_matrix(new_rows @ part, dtype=np.float32) for name, part in m.parts.items()}
    parts[KEPT_PART] = identity
    for part in parts.values():
        part.eliminate_zeros()
        part.sort_indices()
    matrix = sp.csr_matrix(sum(parts.values(), sp.csr_matrix((vt, vs), dtype=np.float32)), dtype=np.float32)
    matrix.sort_indices()
    origin = m.origin.copy()
    origin[:source_vocab] = mapping.Origin.KEPT
    return mapping.Mapping(matrix, origin, parts)


def source_language_probe(
    model,
    source_tokenizer,
    source_lines: list[str],
    target_lines: list[str],
    *,
    lines: int = 50,
    batch: int = 16,
    ridge: float = 1.0,
):
    """A vector `w` over the model's last hidden states (those the LM head reads) with h·w ≈ 1 where the text is
    in the source language and ≈ 0 where it is in the target language: ridge regression over every position of
    `lines` evenly spaced lines of each language, tokenized with the source tokenizer. Returns (w, mean h·w on
    source text, mean h·w on target text)."""
    import torch

    def states(texts: list[str]):
        texts = [t for t in texts[:: max(1, len(texts) // lines)][:lines] if t.strip()]
        ids = [x[:256] for x in encode_many(source_tokenizer, texts) if x]
        device = next(model.parameters()).device
        out = []
        with torch.inference_mode():
            for i in range(0, len(ids), batch):
                rows = ids[i : i + batch]
                x = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
                mask = torch.zeros_like(x)
                for k, r in enumerate(rows):
                    x[k, : len(r)], mask[k, : len(r)] = torch.tensor(r), 1
                h = model.base_model(input_ids=x.to(device), attention_mask=mask.to(device)).last_hidden_state
                real = mask.bool()
                real[:, 0] = False  # a sequence's first position is an outlier (the attention sink)
                out.append(h[real.to(device)].double().cpu())
        return torch.cat(out)

    h_source, h_target = states(source_lines), states(target_lines)
    x = torch.cat([h_source, h_target])
    y = torch.cat([torch.ones(len(h_source)), torch.zeros(len(h_target))]).double()
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    return w.float(), float((h_source @ w).mean()), float((h_target @ w).mean())


def penalise_new_rows(model, source_vocab: int, offset) -> None:
    """Add `offset` to every new token's LM-head row (with tied embeddings, its input embedding too)."""
    import torch

    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[source_vocab:] += offset.to(head.device, head.dtype)


def gguf_pre(source_model: str | Path) -> str | None:
    """The name of llama.cpp's pre-tokenizer for the source model, as its GGUF file records it (None when the source
    is a Hugging Face folder); GGUF export of the extended model needs it (core.export)."""
    path = models.default_gguf() if str(source_model) == models.DEFAULT_MODEL else Path(source_model)
    if path.suffix.lower() != ".gguf" or not path.is_file():
        return None
    found = models.gguf_header(path).get("tokenizer.ggml.pre")
    return None if found is None else str(found)
