"""A bilingual dictionary as mapping evidence: which source tokens each target token should start from.

A dictionary lists words, a mapping needs tokens. Only a target token that is a whole word — the piece after a space,
as running text has it — gets dictionary evidence (`word_counts`), from the entries that translate that word
(case-folded, NFC; a capitalised piece takes the capitalised source word); glosses of more than `max_source_words`
words are skipped. Linking every piece of an entry to every piece of its translation (the first method, kept in
`benchmarks/dictionary_methods.py` with the pseudo-parallel one) let frequent sub-word pieces (`en`, `ción`) collect
links from hundreds of unrelated entries: +17% bits per byte against spelling (docs/results/dictionary.md).

A word the dictionary lacks borrows the translations of the dictionary words it is an inflected form of (`by_stem`):
those with the same stem under the language's Snowball stemmer where it has one (`компьютеры` → `компьютер`), then
those sharing its longest prefix, less a letter (`hijos` → `hijo`, `hija` → `sons`, `daughters`); a plural, by the
language's plural endings, takes the source words' plurals first. A word the source vocabulary has as one token (`de`,
`que`, `la`) keeps that row; a whole word still uncovered takes the source word spelled most like it (`by_spelling`:
names and loanwords, `Jacobo` → `Jacob`; across scripts through a transliteration, `компьютер` → `computer`; a short
word, in a language whose accents are marks, only its spelling without them, `á` → `a`). Every other token keeps its
spelling (FVT) row. `DictionarySettings.for_language` chooses plural endings, stemmer, accent folding and cognates
from the language code; every choice is measured in `benchmarks/dictionary.py` (docs/results/dictionary.md).
Transliterations are only compared, never written: the user's text and the dictionary are read as they are (NFC).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import snowballstemmer
from anyascii import anyascii

from core.errors import TweetyError
from core.resources import DictionaryEntry
from core.tokenizer import is_byte_level, piece_bytes

# Snowball stemmers (`snowballstemmer`) by ISO 639-1 code: a maintained rule set per language, instead of a prefix
# rule shaped on Spanish. Languages without one (Ukrainian, Bulgarian, Japanese…) fall back on the prefix rule.
STEMMERS = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "cs": "czech",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "eo": "esperanto",
    "et": "estonian",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "nn": "norwegian",
    "fa": "persian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "st": "sesotho",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
# Languages whose stemmer is on by default, tried before the prefix rule: where that measured better than the prefix
# rule alone (docs/results/dictionary.md, 2026-12-03: Spanish on three held-out samples, Russian and Finnish by a
# little). Hungarian's measured worse; the stemmer alone, without the prefix rule, measured worse everywhere. Other
# languages with a stemmer have it as a setting (`stemmer`).
STEMMED_BY_DEFAULT = frozenset({"es", "ru", "fi"})
# Languages whose cognates (`by_spelling`) measured worse than none: Russian, where every transliterated look-alike
# among English words (`хочет` → crochet) replaced a spelling row SmolLM2 reads better (docs/results/dictionary.md)
NO_COGNATES = frozenset({"ru"})
# Plural endings by ISO 639-1 code, where a plural is mostly a word + one of them and the singular does not end so
# (`casas`): measured on Spanish (2.460 against 2.468 bits/byte without), the other -s languages by the same grammar
# rule. Russian (ы, и) and Finnish (-t) measured worse with their endings than without (docs/results/dictionary.md,
# 2026-12-03: `книги` is as often a genitive singular, `-t` plurals are rare in running text), so they get none by
# default, nor do languages not listed; a user sets them (`plural_endings`).
PLURAL_ENDINGS: dict[str, tuple[str, ...]] = {"es": ("s",), "pt": ("s",), "ca": ("s",), "gl": ("s",), "fr": ("s",)}
# Scripts whose words are compared with the source's by their spelling without accents, where an accent is a mark on
# a letter that stays that letter (`á` ~ `a`). In Cyrillic the same marks make other letters (`й` is not `и`, `ё` is
# not `е`), so no accent is dropped there: words of every other script are compared romanised (`_romanised`; a
# transliteration drops Greek accents by itself).
ACCENTED_SCRIPTS = frozenset({"LATIN"})
# Languages whose accents mark stress or vowel quality on a letter the source language writes without them, so that a
# short word may take the source word spelled the same but for its accents (Spanish `á` → `a`, `qué` → `que`). Not
# where a dotted or accented vowel is a letter of its own (Finnish, Hungarian, German `ä`, `ö`, `ő`: `sä` is no `sa`).
ACCENT_FOLDING = frozenset({"es", "pt", "ca", "gl", "fr", "it"})


@dataclass(frozen=True)
class DictionarySettings:
    """How dictionary entries become evidence; the defaults measured best on FreeDict eng-spa (docs/results/
    dictionary.md). `DictionarySettings()` is the Spanish-shaped default; `for_language` fits it to a language."""

    max_source_words: int = 2  # longer source glosses ("a shop where drugs are sold") are skipped
    # a source word of several tokens (`alms` → ` al` `ms`) is an average of unrelated pieces, so it is left out
    # wherever the target word has a translation that is one source token
    one_token_sources: bool = True
    # a whole word the dictionary lacks takes the translations of the dictionary words sharing its longest prefix of
    # at least this many letters (0: off), e.g. `hijos` → `hijo`, `hablaba` → `hablar` (see `by_stem`)
    stem_match: int = 3
    max_ending: int = 6  # stem matching: neither word may go on for more than this many letters after the prefix
    # a target word the source vocabulary has as one token (`de`, `que`, `no`, `la`: spelled alike) keeps that row,
    # which the source model knows, when the dictionary gives it at least this many translations (1: always, 0:
    # never); an average of several translations is a short, vague vector, and even one translation (`Mar` → `Sea`)
    # is often a worse guess than the word the model already reads
    spelling_kept_from: int = 1
    # stem matching: the target language's plural endings (`PLURAL_ENDINGS`; empty: no plural rule): a word ending in
    # one where its lemma does not (`príncipes` ← `príncipe`) takes its translations + `source_plural` first
    # (`princes`), their singulars at half weight; a plural that is not one source token is left out by
    # `one_token_sources`
    plural_endings: tuple[str, ...] = ("s",)
    source_plural: str = "s"  # the source language's plural ending (an English source model: -s)
    # stem matching: pool instead the lemmas sharing a prefix this many letters shorter than the longest (within the
    # same ending limits; `casas` → `casa` and `casar`, `hijos` → `hijo` and `hija`); 0: the longest prefix's only.
    # A vaguer average of related words' translations draws less probability from frequent tokens than one, often
    # wrong, lemma's
    wider_pool: int = 1
    # stem matching: a word that no dictionary word matches within `max_ending` then tries again with this limit (0:
    # no second try)
    fallback_ending: int = 8
    # a whole word still without translations (names, loanwords: `Jacobo`, `efecto`) takes the source vocabulary's
    # word spelled most like it, if difflib's similarity ratio is at least this (0: off; `by_spelling`)
    cognates: float = 0.85
    # cognates: a word of fewer than 4 letters takes a source word spelled the same but for accents (`ACCENT_FOLDING`)
    fold_accents: bool = True
    # a Snowball stemmer (`snowballstemmer.algorithms()`, e.g. "russian"; "": none): a word the dictionary lacks
    # first takes the translations of the dictionary words with its stem, before the prefix rule
    stemmer: str = ""

    def __post_init__(self) -> None:
        if self.stemmer and self.stemmer not in snowballstemmer.algorithms():
            raise TweetyError(
                f"no Snowball stemmer called {self.stemmer!r}",
                fix=f"choose one of {', '.join(snowballstemmer.algorithms())}, or none",
            )

    @classmethod
    def for_language(cls, code: str, **changes) -> DictionarySettings:
        """The settings for a target language code (`es`, `ru-RU`, `pt_BR`), as measured best: its plural endings, its
        Snowball stemmer, accent folding and cognates; no code keeps the default (Spanish-shaped, no stemmer).
        `changes` (e.g. `plural_endings=("en",)`) win."""
        lang = code.replace("_", "-").split("-")[0].casefold()
        if not lang:
            return replace(cls(), **changes)
        return replace(
            cls(
                plural_endings=PLURAL_ENDINGS.get(lang, ()),
                fold_accents=lang in ACCENT_FOLDING,
                stemmer=STEMMERS.get(lang, "") if lang in STEMMED_BY_DEFAULT else "",
                cognates=0.0 if lang in NO_COGNATES else cls.cognates,
            ),
            **changes,
        )

    def chosen(self, plural_endings: Sequence[str] | None = None, cognates: bool | None = None) -> DictionarySettings:
        """These settings with what a user chose instead of the language's own (None: keep): the plural endings (()
        for no plural rule), and whether words without translations take a source word spelled like them."""
        changes: dict = {}
        if plural_endings is not None:
            changes["plural_endings"] = tuple(plural_endings)
        if cognates is not None:
            changes["cognates"] = (self.cognates or DictionarySettings.cognates) if cognates else 0.0
        return replace(self, **changes)


def parse_endings(text: str) -> tuple[str, ...]:
    """A user's plural endings, as typed: "s, es" → ("s", "es"); "none" (or "-") → () — no plural rule. Refuses
    anything but letters, naming what to type."""
    text = unicodedata.normalize("NFC", text).strip()
    if text.casefold() in ("none", "-"):
        return ()
    endings = tuple(dict.fromkeys(e.strip().lstrip("-").casefold() for e in text.split(",") if e.strip()))
    wrong = [e for e in endings if not e.isalpha()]
    if wrong:
        raise TweetyError(
            f"{wrong[0]!r} is not a word ending (plural endings are letters, such as s or es)",
            fix="type the endings separated by commas (e.g. “s, es”), or “none” for no plural rule",
        )
    return endings


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _capitalised(word: str) -> bool:
    return word[:1].isupper() and not word[1:2].isupper()


def _recase(source: str, like: str) -> str:
    """`source` written as the target word `like` is: capitalised (`Dios` → `God`) or as the dictionary has it."""
    return source[:1].upper() + source[1:] if _capitalised(like) else source


def translations(
    entries: Sequence[DictionaryEntry], settings: DictionarySettings = DictionarySettings()
) -> dict[str, list[tuple[str, float]]]:
    """Target word (case-folded, NFC) → its source words (NFC) with the summed weights of their entries, heaviest
    first. Multi-word targets are skipped (they are not one word of running text), as are sources longer than
    `settings.max_source_words` words."""
    found: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in entries:
        target, source = e.target.strip(), unicodedata.normalize("NFC", e.source.strip())
        if not target or not source or len(target.split()) != 1 or len(source.split()) > settings.max_source_words:
            continue
        found[_fold(target)][source] += e.weight
    return {t: sorted(s.items(), key=lambda kv: -kv[1]) for t, s in found.items()}


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


Translations = dict[str, list[tuple[str, float]]]


def _pooled(
    word: str, lemmas: Sequence[str], table: Translations, settings: DictionarySettings
) -> list[tuple[str, float]]:
    """The lemmas' translations pooled for `word`, each lemma counting the same however many senses it lists; a
    plural (`settings.plural_endings`) takes the source plurals first, the singulars at half weight."""
    pooled: dict[str, float] = defaultdict(float)
    for lemma in lemmas:
        total = sum(weight for _, weight in table[lemma])
        plural = settings.source_plural and any(
            word.endswith(e) and not lemma.endswith(e) for e in settings.plural_endings
        )
        for source, weight in table[lemma]:
            if plural:
                pooled[source + settings.source_plural] += weight / total
            pooled[source] += weight / total / (2 if plural else 1)
    return sorted(pooled.items(), key=lambda kv: -kv[1])


def _by_stemmer(words: Sequence[str], table: Translations, settings: DictionarySettings) -> Translations:
    """Each word → the pooled translations of the dictionary words with its Snowball stem (`книги` → `книга`)."""
    stem: Callable[[str], str] = snowballstemmer.stemmer(settings.stemmer).stemWord
    lemmas: dict[str, list[str]] = defaultdict(list)
    for known in table:
        lemmas[stem(known)].append(known)
    return {w: _pooled(w, lemmas[stem(w)], table, settings) for w in words if stem(w) in lemmas}


def _by_prefix(
    words: Sequence[str], table: Translations, settings: DictionarySettings, max_ending: int
) -> Translations:
    """Each word → the pooled translations of the dictionary words sharing its longest prefix of at least
    `settings.stem_match` letters, neither word going on for more than `max_ending` letters (see `by_stem`)."""
    s = settings
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for known in table:
        for n in range(s.stem_match, len(known) + 1):
            if len(known) - n <= max_ending:
                by_prefix[known[:n]].append(known)
    out = {}
    for word in words:
        for n in range(len(word), max(s.stem_match, len(word) - max_ending) - 1, -1):
            lemmas = by_prefix.get(word[:n])
            if lemmas:
                # The prefix itself a word (`casas` = `casa` + s) beats words that go on (`casar`)
                lemmas = [w for w in lemmas if len(w) == n] or lemmas
                if s.wider_pool:
                    lemmas = by_prefix.get(word[: max(s.stem_match, n - s.wider_pool)], lemmas)
                out[word] = _pooled(word, lemmas, table, s)
                break
    return out


def by_stem(words: Sequence[str], table: Translations, settings: DictionarySettings) -> Translations:
    """Translations for the (case-folded) `words` the table lacks, from the dictionary words each is an inflected form
    of, the way a suffixing language inflects: with `settings.stemmer`, those of the same Snowball stem; then (with
    `settings.stem_match`) those sharing the longest prefix with it, of at least `stem_match` letters, neither word
    going on for more than `settings.max_ending` letters (`hijos`, `hablaba` → `hijo`, `hablar`). Several lemmas pool
    their translations; with `settings.wider_pool`, so do those sharing a prefix that many letters shorter; with
    `settings.fallback_ending`, a word matching none tries again with that ending limit. A word that ends in one of
    `settings.plural_endings` where its lemma does not (`príncipes` ← `príncipe`) takes its translations' plurals
    first (`princes`), their singulars at half weight."""
    rest = [w for w in words if w not in table]
    out = _by_stemmer(rest, table, settings) if settings.stemmer else {}
    if settings.stem_match:
        for limit in filter(None, (settings.max_ending, settings.fallback_ending)):
            out |= _by_prefix([w for w in rest if w not in out], table, settings, limit)
    return out


def _script(word: str) -> str:
    """The Unicode script of the word's first letter (`LATIN`, `CYRILLIC`, `GREEK`, `CJK`…), from its name."""
    letter = next((c for c in word if c.isalpha()), "")
    return unicodedata.name(letter, "").split(" ")[0]


def _plain(word: str) -> str:
    """Case-folded with accents dropped: how two spellings of accented scripts are compared (`nación` ~ `nation`)."""
    return "".join(c for c in unicodedata.normalize("NFD", word.casefold()) if not unicodedata.combining(c))


# Spellings English borrowings share with a romanisation (anyascii) of another script, in this order: `ph` → f,
# `c`, `q` → k, `y` → i, `w` → v, so that `компьютер` (komp'yuter → kompiuter) meets `computer` (komputer)
_ROMAN_FOLDS = (("ph", "f"), ("c", "k"), ("q", "k"), ("y", "i"), ("w", "v"))


def _romanised(word: str) -> str:
    """A comparison key across scripts: the word transliterated (anyascii), letters a–z only, `_ROMAN_FOLDS` applied."""
    key = re.sub("[^a-z]", "", anyascii(unicodedata.normalize("NFC", word)).casefold())
    for spelling, sound in _ROMAN_FOLDS:
        key = key.replace(spelling, sound)
    return key


def _index(source_words: Sequence[str], key: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """First letter of the key → key → source word; of source words with the same key, the lower-case, unaccented
    one is kept (`nation` overwrites `Nation`, `a` overwrites `à`)."""
    index: dict[str, dict[str, str]] = defaultdict(dict)
    for w in sorted(source_words, key=lambda w: (w.islower(), _plain(w) == w)):
        k = key(w)
        index[k[:1]][k] = w
    return index


def by_spelling(
    words: Sequence[str], source_words: Sequence[str], cutoff: float, min_letters: int = 4, fold_accents: bool = True
) -> Translations:
    """Cognates: each of `words` → the one of `source_words` spelled most like it (difflib's ratio ≥ `cutoff`; the
    same first letter, at most half as long again or shorter; both ≥ `min_letters` letters): names and loanwords a
    dictionary does not list (`efecto` → `effect`, `Jacobo` → `Jacob`). A word of an accented script (`ACCENTED_
    SCRIPTS`: Latin) is compared without accents, and a shorter one, with `fold_accents`, takes only a source word
    spelled the same but for accents (`á` → `a`, `qué` → `que`); a word of another script is compared romanised
    (`_romanised`, `компьютер` → `computer`) with the source words of the Latin script and its own, and a short one
    takes nothing (`и` is not `i`). A word the source has itself is left to its own row. `_recase` capitalises where
    the target word is."""
    indexes: dict[str, dict[str, dict[str, str]]] = {}  # by the target word's script
    known = set(source_words)  # `words` are case-folded: a capitalised target word has the kept rule of word_counts
    out = {}
    for word in words:
        if word in known:
            continue
        script = _script(word)
        accented = script in ACCENTED_SCRIPTS
        if script not in indexes:
            indexes[script] = (
                _index(source_words, _plain)
                if accented
                else _index([w for w in source_words if _script(w) in ("LATIN", script)], _romanised)
            )
        plain = _plain(word) if accented else _romanised(word)
        same = indexes[script].get(plain[:1], {})
        if len(plain) < min_letters:
            best = [plain] if accented and fold_accents and plain in same and plain != word else []
        else:
            candidates = [c for c in same if len(c) >= min_letters and abs(len(c) - len(plain)) <= len(plain) // 2]
            best = difflib.get_close_matches(plain, candidates, n=1, cutoff=cutoff)
        if best:
            out[word] = [(same[best[0]], 1.0)]
    return out


def word_counts(
    entries: Sequence[DictionaryEntry],
    source_tokenizer,
    target_tokenizer,
    settings: DictionarySettings = DictionarySettings(),
) -> sp.csr_matrix:
    """Dictionary evidence for whole-word target tokens only (see the module docstring)."""
    shape = (len(target_tokenizer), len(source_tokenizer))
    table = translations(entries, settings)
    words = whole_words(target_tokenizer)
    folded = sorted({_fold(w) for w in words.values()})
    if settings.stem_match or settings.stemmer:
        table = {**table, **by_stem(folded, table, settings)}
    if settings.cognates and table:  # a dictionary with no usable entry gives no evidence, cognates neither
        missing = [w for w in folded if w not in table]
        table = {
            **table,
            **by_spelling(
                missing,
                list(whole_words(source_tokenizer).values()),
                settings.cognates,
                fold_accents=settings.fold_accents,
            ),
        }
    rows, cols, vals = [], [], []
    for t, word in words.items():
        sources = table.get(_fold(word))
        if not sources:
            continue
        if (
            settings.spelling_kept_from
            and len(sources) >= settings.spelling_kept_from
            and len(source_tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1
        ):
            continue
        ids = source_tokenizer([" " + _recase(s, word) for s, _ in sources], add_special_tokens=False)["input_ids"]
        pairs = list(zip(sources, ids))
        if settings.one_token_sources and any(len(i) == 1 for i in ids):
            pairs = [(s, i) for s, i in pairs if len(i) == 1]
        for (_, weight), s_ids in pairs:
            for s in s_ids:  # a source word of several tokens spreads its weight evenly
                rows.append(t), cols.append(s), vals.append(weight / len(s_ids))
    m = sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float64)
    m.sum_duplicates()
    return m
