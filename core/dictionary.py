"""A bilingual dictionary as mapping evidence: which source tokens each target token should start from.

A dictionary lists words, a mapping needs tokens. Linking every target piece of an entry to every source piece
(`entry_counts`, the first method) lets a frequent sub-word piece (`en`, `ción`) collect links from hundreds of
unrelated entries, which then replace its better spelling-based (FVT) row. Two other ways, both measured in
`benchmarks/dictionary.py` (README, "A dictionary alone"):

- `word_counts` (the default): only a target token that is a whole word — the piece after a space, as running
  text has it — gets dictionary evidence, from the entries that translate that word (case-folded; a capitalised
  piece takes the capitalised source word); glosses of more than `max_source_words` words are skipped. A word the
  dictionary lacks borrows the translations of the dictionary words sharing its longest prefix, less a letter
  (`by_stem`: inflected forms, `hijos` → `hijo`, `hija` → `sons`, `daughters`), and a word the source vocabulary
  has as one token (`de`, `que`, `la`) keeps that row; a whole word still uncovered takes the source word spelled
  most like it (`by_spelling`: names and loanwords, `Jacobo` → `Jacob`; a short word only its spelling without
  accents, `á` → `a`). Every other token keeps its spelling (FVT) row. Options measured and left off by default:
  weighting an entry by 1 / its headword's number of senses and by the source word's frequency rank, keeping only
  the top sense, mixing the spelling row in, exact dictionary words only, stricter stem matches for short words.
- `pseudo_parallel_counts`: the target text translated word by word with the reversed dictionary (each word's
  heaviest source word; words the dictionary lacks — names, numbers, cognates — copied as they are) is a
  pseudo-parallel corpus in the target's own word order; the token aligner
  (`core.align`) then links pieces in context, so sub-word pieces get evidence only where the alignment finds it,
  and the usual thresholds (pairs seen ≥ 5 times, tokens with ≥ 20 links) keep only confident links.
"""
from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from core.align import AlignSettings, count_links
from core.jobs import Reporter
from core.resources import DictionaryEntry
from core.tokenizer import encode_many, is_byte_level, piece_bytes

log = logging.getLogger(__name__)

METHODS = ("words", "pseudo-parallel", "entries")
_WORD = re.compile(r"\w+|[^\w\s]+")


@dataclass(frozen=True)
class DictionarySettings:
    method: str = "words"  # see METHODS and the module docstring
    max_source_words: int = 2  # longer source glosses ("a shop where drugs are sold") are skipped
    # Measured (benchmarks/dictionary.py): every entry counting the same beat both weightings below.
    sense_weights: bool = False  # an entry counts 1 / its headword's number of senses
    frequency_prior: bool = False  # and 1 / the source word's rank in the source vocabulary (see `_ranks`)
    min_pair_count: int = 5  # pseudo-parallel: links seen fewer times are dropped
    min_token_count: int = 20  # pseudo-parallel: target tokens with fewer links get no evidence
    max_lines: int = 50_000  # pseudo-parallel: at most this many lines of target text are translated and aligned
    max_sources: int = 0  # words: keep only the heaviest this many source words per target word (0: all)
    spelling_share: float = 0.0  # words: this share of a dictionary token's row comes from its spelling (FVT)
    # The defaults below: measured best on FreeDict eng-spa (README, "A dictionary alone"), 2.474 bits/byte against
    # 2.586 for FVT and 2.594 for dictionary words only.
    # words: a source word of several tokens (`alms` → ` al` `ms`) is an average of unrelated pieces, so it is left
    # out wherever the target word has a translation that is one source token
    one_token_sources: bool = True
    # words: a whole word the dictionary lacks takes the translations of the dictionary words sharing its longest
    # prefix of at least this many letters (0: off), e.g. `hijos` → `hijo`, `hablaba` → `hablar` (see `by_stem`)
    stem_match: int = 3
    max_ending: int = 6  # stem matching: neither word may go on for more than this many letters after the prefix
    max_lemma_ending: int = 0  # stem matching: nor the dictionary word for more than this many (0: `max_ending`)
    # stem matching: the word must go on after the shared prefix (`pues` is not `puesto`); measured worse
    own_ending: bool = False
    # words: a target word the source vocabulary has as one token (`de`, `que`, `no`, `la`: spelled alike) keeps
    # that row, which the source model knows, when the dictionary gives it at least this many translations (1:
    # always, 0: never); an average of several translations is a short, vague vector, and even one translation
    # (`Mar` → `Sea`) is often a worse guess than the word the model already reads
    spelling_kept_from: int = 1
    # stem matching: (target, source) plural endings (see `by_stem`): ("s", "s") suits an English source model and a
    # target language that marks plurals with -s (Spanish, Portuguese, French); a plural that is not one source
    # token is left out by `one_token_sources`; ("", "") turns it off
    plural: tuple[str, str] = ("s", "s")
    closest_lemmas: bool = False  # stem matching: of the lemmas sharing the prefix, only those that go on least
    # (measured worse: pooling every lemma at the longest prefix beat it)
    # stem matching: or only those closest in length to the word (`todas` → `todos`; measured worse, both samples)
    nearest_length: bool = False
    # stem matching: pool instead the lemmas sharing a prefix this many letters shorter than the longest (within the
    # same ending limits; `casas` → `casa` and `casar`, `hijos` → `hijo` and `hija`); 0: the longest prefix's only.
    # Measured better on both held-out samples (README, "A dictionary alone"): a vaguer average of related words'
    # translations draws less probability from frequent tokens than one, often wrong, lemma's; 2 or 3 gain less
    wider_pool: int = 1
    # stem matching: the shared prefix must be at least this share of the longer of the two words (0: off), so that
    # a short word is not read as a long lemma that merely starts like it (`esto` → `estornudo`, `vino` → `vinagre`);
    # measured worse on both samples, also for short words only: the nonsense rows still beat spelling rows
    stem_share: float = 0.0
    short_word: int = 0  # stem matching: `stem_share` applies only to words of at most this many letters (0: all)
    # stem matching: a word that no dictionary word matches within `max_ending` then tries again with this limit (0:
    # no second try); 8 measured a little better on both samples (12 worse), as wider limits for every word were
    fallback_ending: int = 8
    # words: a whole word still without translations (names, loanwords: `Jacobo`, `efecto`, `imaginaciones`) takes
    # the source vocabulary's word spelled most like it, if difflib's similarity ratio is at least this (accents and
    # case ignored, same first letter; 0: off; `by_spelling`), and a word of fewer than 4 letters its spelling
    # without accents where the source has that (`á` → `a`, `qué` → `que`). Cognates measured a little better on
    # all three held-out samples (−0.002 to −0.003 bits/byte), as 0.9; 0.8 lost on one, 0.7 and 0.75 on two (more
    # false friends); the accent rule −0.005 to −0.021 (README, "A dictionary alone")
    cognates: float = 0.85


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _capitalised(word: str) -> bool:
    return word[:1].isupper() and not word[1:2].isupper()


def _recase(source: str, like: str) -> str:
    """`source` written as the target word `like` is: capitalised (`Dios` → `God`) or as the dictionary has it."""
    return source[:1].upper() + source[1:] if _capitalised(like) else source


def _ranks(sources: set[str], source_tokenizer) -> dict[str, int]:
    """A frequency rank of each source word without counting any text: a BPE vocabulary adds its merges in order of
    frequency, so a word that is one token after a space ranks by that token's id (`the` ≈ 300, `soil` ≈ 20,000);
    a word of several tokens ranks after the whole vocabulary."""
    words = sorted(sources)
    ids = source_tokenizer([" " + w for w in words], add_special_tokens=False)["input_ids"]
    last = len(source_tokenizer)
    return {w: (i[0] + 1 if len(i) == 1 else last * len(i)) for w, i in zip(words, ids)}


def translations(entries: Sequence[DictionaryEntry], settings: DictionarySettings = DictionarySettings(),
                 source_tokenizer=None) -> dict[str, list[tuple[str, float]]]:
    """Target word (case-folded) → its source words with weights, heaviest first: an entry's weight, divided by
    the number of senses of its source headword when `settings.sense_weights`, and by the source word's frequency
    rank when `settings.frequency_prior` and a source tokenizer is given — P(source | target) ∝ P(target | source)
    P(source). Multi-word targets are skipped (they are not one word of running text), as are sources longer than
    `settings.max_source_words` words."""
    senses: dict[str, int] = defaultdict(int)
    for e in entries:
        senses[_fold(e.source)] += 1
    ranks = (_ranks({e.source.strip() for e in entries}, source_tokenizer)
             if settings.frequency_prior and source_tokenizer is not None else None)
    found: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        target, source = e.target.strip(), e.source.strip()
        if not target or not source or len(target.split()) != 1 or len(source.split()) > settings.max_source_words:
            continue
        weight = e.weight / senses[_fold(e.source)] if settings.sense_weights else e.weight
        if ranks is not None:
            weight /= ranks[source]
        found[_fold(target)][source] += weight
    return {t: sorted(s.items(), key=lambda kv: -kv[1]) for t, s in found.items()}


def entry_counts(entries: Sequence[DictionaryEntry], source_tokenizer, target_tokenizer) -> sp.csr_matrix:
    """The first method: each entry links every target token of the target word to every source token of the
    source word; an entry's weight is spread evenly so that long words do not outvote short ones."""
    shape = (len(target_tokenizer), len(source_tokenizer))
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


def whole_words(target_tokenizer) -> dict[int, str]:
    """Target token id → the word it stands for, for every token that is a space followed by letters only."""
    byte_level = is_byte_level(target_tokenizer)
    out = {}
    for t, piece in enumerate(target_tokenizer.convert_ids_to_tokens(list(range(len(target_tokenizer))))):
        data = piece_bytes(piece, byte_level)
        if not data or data[:1] != b" ":
            continue
        word = data[1:].decode("utf-8", errors="replace")
        if word and word.isalpha():
            out[t] = word
    return out


def by_stem(words: Sequence[str], table: dict[str, list[tuple[str, float]]], settings: DictionarySettings
            ) -> dict[str, list[tuple[str, float]]]:
    """Translations for the (case-folded) `words` the table lacks, from the table's words that share the longest
    prefix with each, of at least `settings.stem_match` letters, neither word going on for more than
    `settings.max_ending` letters: an inflected form (`hijos`, `hablaba`) borrows its lemma's translations (`hijo`,
    `hablar`), the way a suffixing language inflects. Several lemmas at the same length pool their translations;
    with `settings.wider_pool`, so do those sharing a prefix that many letters shorter; with
    `settings.fallback_ending`, a word matching none tries again with that ending limit.
    With `settings.plural` = (target ending, source ending), a word that ends in the target's plural ending where its
    lemma does not (`príncipes` ← `príncipe`) takes its translations' plurals first (`princes`), their singulars at
    half weight."""
    s, plural = settings, settings.plural
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for known in table:
        for n in range(s.stem_match, len(known) + 1):
            if len(known) - n <= (s.max_lemma_ending or s.max_ending):
                by_prefix[known[:n]].append(known)
    out = {}
    for word in words:
        if word in table:
            continue
        share = s.stem_share if len(word) <= (s.short_word or len(word)) else 0.0
        for n in range(len(word) - s.own_ending, max(s.stem_match, len(word) - s.max_ending) - 1, -1):
            lemmas = [w for w in by_prefix.get(word[:n], ()) if n >= share * max(len(w), len(word))]
            if lemmas:
                # The prefix itself a word (`casas` = `casa` + s) beats words that go on (`casar`); with
                # `closest`, so does any shorter ending.
                shortest = min(map(len, lemmas)) if s.closest_lemmas else n
                lemmas = [w for w in lemmas if len(w) == shortest] or lemmas
                if s.wider_pool:
                    lemmas = by_prefix.get(word[:max(s.stem_match, n - s.wider_pool)], lemmas)
                if s.nearest_length:
                    gap = min(abs(len(w) - len(word)) for w in lemmas)
                    lemmas = [w for w in lemmas if abs(len(w) - len(word)) == gap]
                pooled: dict[str, float] = defaultdict(float)
                for lemma in lemmas:  # each lemma counts the same, however many senses it lists
                    total = sum(weight for _, weight in table[lemma])
                    plural_form = plural[0] and word.endswith(plural[0]) and not lemma.endswith(plural[0])
                    for source, weight in table[lemma]:
                        if plural_form:
                            pooled[source + plural[1]] += weight / total
                        pooled[source] += weight / total / (2 if plural_form else 1)
                out[word] = sorted(pooled.items(), key=lambda kv: -kv[1])
                break
    if s.fallback_ending:  # the words still unmatched try again with the longer limit
        unmatched = [w for w in words if w not in out]
        out |= by_stem(unmatched, table, replace(s, max_ending=s.fallback_ending, fallback_ending=0))
    return out


def _plain(word: str) -> str:
    """Case-folded with accents dropped: how two spellings are compared for cognates (`nación` ~ `nation`)."""
    return "".join(c for c in unicodedata.normalize("NFD", word.casefold()) if not unicodedata.combining(c))


def by_spelling(words: Sequence[str], source_words: Sequence[str], cutoff: float, min_letters: int = 4
                ) -> dict[str, list[tuple[str, float]]]:
    """Cognates: each of `words` → the one of `source_words` spelled most like it (difflib's ratio ≥ `cutoff` on
    `_plain` forms; the same first letter, at most half as long again or shorter; both ≥ `min_letters` letters):
    names and loanwords a dictionary does not list (`efecto` → `effect`, `Jacobo` → `Jacob`). A shorter word takes
    only a source word spelled the same but for accents (`á` → `a`, `qué` → `que`); a word the source has itself is
    left to its own row. Of source words spelled alike but for case or accents, the lower-case, unaccented one is
    kept (`_recase` capitalises it where the target word is)."""
    index: dict[str, dict[str, str]] = defaultdict(dict)
    # lower-case and unaccented last: `nation` overwrites `Nation`, `a` overwrites `à`
    for w in sorted(source_words, key=lambda w: (w.islower(), _plain(w) == w)):
        plain = _plain(w)
        index[plain[:1]][plain] = w
    known = set(source_words)  # `words` are case-folded: a capitalised target word has the kept rule of word_counts
    out = {}
    for word in words:
        if word in known:
            continue
        plain = _plain(word)
        same = index.get(plain[:1], {})
        if len(plain) < min_letters:
            best = [plain] if plain in same and plain != word else []
        else:
            candidates = [c for c in same if len(c) >= min_letters and abs(len(c) - len(plain)) <= len(plain) // 2]
            best = difflib.get_close_matches(plain, candidates, n=1, cutoff=cutoff)
        if best:
            out[word] = [(same[best[0]], 1.0)]
    return out


def word_counts(entries: Sequence[DictionaryEntry], source_tokenizer, target_tokenizer,
                settings: DictionarySettings = DictionarySettings()) -> sp.csr_matrix:
    """Dictionary evidence for whole-word target tokens only (see the module docstring)."""
    shape = (len(target_tokenizer), len(source_tokenizer))
    table = translations(entries, settings, source_tokenizer)
    words = whole_words(target_tokenizer)
    folded = sorted({_fold(w) for w in words.values()})
    if settings.stem_match:
        table = {**table, **by_stem(folded, table, settings)}
    if settings.cognates and table:  # a dictionary with no usable entry gives no evidence, cognates neither
        missing = [w for w in folded if w not in table]
        table = {**table, **by_spelling(missing, list(whole_words(source_tokenizer).values()), settings.cognates)}
    rows, cols, vals = [], [], []
    for t, word in words.items():
        sources = table.get(_fold(word))
        if not sources:
            continue
        if settings.spelling_kept_from and len(sources) >= settings.spelling_kept_from and len(
                source_tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1:
            continue
        ids = source_tokenizer([" " + _recase(s, word) for s, _ in sources], add_special_tokens=False)["input_ids"]
        pairs = list(zip(sources, ids))
        if settings.one_token_sources and any(len(i) == 1 for i in ids):
            pairs = [(s, i) for s, i in pairs if len(i) == 1]
        for (_, weight), s_ids in pairs[:settings.max_sources or None]:
            for s in s_ids:  # a source word of several tokens spreads its weight evenly
                rows.append(t), cols.append(s), vals.append(weight / len(s_ids))
    m = sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float64)
    m.sum_duplicates()
    return m


def translate_word_by_word(lines: Sequence[str], entries: Sequence[DictionaryEntry],
                           settings: DictionarySettings = DictionarySettings(), source_tokenizer=None) -> list[str]:
    """Each target line with every word replaced by its likeliest source word (`translations`; case carried
    over); words the dictionary lacks and punctuation are kept as they are."""
    best = {t: sources[0][0] for t, sources in translations(entries, settings, source_tokenizer).items()}
    out = []
    for line in lines:
        words = _WORD.findall(line)
        out.append(" ".join(_recase(best[_fold(w)], w) if _fold(w) in best else w for w in words))
    return out


def pseudo_parallel_counts(entries: Sequence[DictionaryEntry], target_text: Sequence[str], source_tokenizer,
                           target_tokenizer, settings: DictionarySettings = DictionarySettings(),
                           report: Reporter | None = None) -> sp.csr_matrix:
    """Link counts of the target text aligned, token by token, with its word-by-word translation; filtered by the
    alignment thresholds, since a dictionary resource is not filtered again by the mapping."""
    shape = (len(target_tokenizer), len(source_tokenizer))
    lines = [line for line in target_text if line.strip()][:settings.max_lines]
    translated = translate_word_by_word(lines, entries, settings, source_tokenizer)
    src = encode_many(source_tokenizer, translated, report, "tokenizing the word-by-word translation")
    tgt = encode_many(target_tokenizer, lines, report, "tokenizing the target text")
    counts, keep, _ = count_links(src, tgt, shape, AlignSettings(), report or Reporter(None, None, "Aligning"))
    counts = counts.astype(np.float64)
    counts.data[counts.data < settings.min_pair_count] = 0
    counts.eliminate_zeros()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    counts = sp.csr_matrix(sp.diags((totals >= settings.min_token_count).astype(np.float64)) @ counts)
    counts.eliminate_zeros()
    log.info("pseudo-parallel: %d lines aligned, %d target tokens with evidence", len(keep),
             int((np.diff(counts.indptr) > 0).sum()))
    return counts
