"""A bilingual dictionary as mapping evidence, on the real SmolLM2 tokenizer, an 800-piece Spanish tokenizer trained
on 400 real verses, and real English–Spanish entries."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import write_lines
from core.dictionary import DictionarySettings, by_spelling, by_stem, translations, whole_words
from core.errors import TweetyError
from core.mapping import Origin, build_mapping, dictionary_evidence, fvt_mapping
from core.resources import DictionaryEntry, read_dictionary

# Real words the 800-piece tokenizer splits: every one shares a frequent sub-word piece with others (`en`, `iento`,
# `ció`, `ent`), which the first method linked to all of these unrelated source words.
SPLIT_WORDS = [
    ("generations", "generaciones"),
    ("understanding", "entendimiento"),
    ("tale", "cuento"),
    ("wind", "viento"),
    ("commandment", "mandamiento"),
    ("creation", "creación"),
    ("nation", "nación"),
    ("tent", "tienda"),
    ("hundred", "ciento"),
]


def row(m, source_tokenizer, target_tokenizer, piece: str) -> dict[str, float]:
    r = m.matrix[target_tokenizer.convert_tokens_to_ids(piece)]
    return {source_tokenizer.convert_ids_to_tokens(int(j)): float(w) for j, w in zip(r.indices, r.data)}


def test_a_target_word_of_one_token_maps_to_its_translation(source_tokenizer, target_tokenizer):
    entries = [DictionaryEntry("God", "Dios"), DictionaryEntry("earth", "tierra"), DictionaryEntry("waters", "aguas")]
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    for piece, source in (("▁Dios", "ĠGod"), ("▁tierra", "Ġearth"), ("▁aguas", "Ġwaters")):
        assert row(m, source_tokenizer, target_tokenizer, piece) == {source: pytest.approx(1.0)}
        assert m.origin[target_tokenizer.convert_tokens_to_ids(piece)] == Origin.DICTIONARY
    # Nothing else (with cognates off; they give names and loanwords rows too): every other token keeps its spelling.
    only = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            dictionary_evidence(entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(cognates=0.0))
        ],
    )
    assert only.coverage()["dictionary"] == 3


def test_case_is_carried_over_and_every_entry_counts_the_same(source_tokenizer, target_tokenizer):
    # The dictionary writes `dios`; the capitalised piece takes the capitalised source word.
    entries = [
        DictionaryEntry("god", "dios"),
        DictionaryEntry("earth", "tierra"),
        DictionaryEntry("land", "tierra"),
        DictionaryEntry("land", "país"),
        DictionaryEntry("land", "suelo"),
        DictionaryEntry("land", "terreno"),
    ]
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    assert row(m, source_tokenizer, target_tokenizer, "▁Dios") == {"ĠGod": pytest.approx(1.0)}
    # `land` has four senses, but every entry counts 1 (weighing by senses measured worse): earth and land halve.
    assert row(m, source_tokenizer, target_tokenizer, "▁tierra") == {
        "Ġearth": pytest.approx(0.5),
        "Ġland": pytest.approx(0.5),
    }
    assert translations(entries)["tierra"] == [("earth", 1.0), ("land", 1.0)]


def test_words_are_read_in_nfc_and_never_transliterated(source_tokenizer, target_tokenizer):
    # A dictionary written decomposed (`a` + U+0301) still finds the tokenizer's composed `▁árbol`.
    entries = [DictionaryEntry("tree", "a\u0301rbol"), DictionaryEntry("computer", "компьютер")]
    assert set(translations(entries)) == {"árbol", "компьютер"}  # as written, only composed: no romanisation
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    assert row(m, source_tokenizer, target_tokenizer, "▁árbol") == {"Ġtree": pytest.approx(1.0)}


def test_frequent_sub_word_pieces_are_not_hijacked(source_tokenizer, target_tokenizer):
    entries = [DictionaryEntry(en, es) for en, es in SPLIT_WORDS]
    fvt = fvt_mapping(source_tokenizer, target_tokenizer)
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    for piece in ("en", "ent", "iento", "ció"):  # the first method (benchmarks/dictionary_methods.py) linked them
        t = target_tokenizer.convert_tokens_to_ids(piece)
        assert m.origin[t] == Origin.FVT
        assert (m.matrix[t] != fvt.matrix[t]).nnz == 0  # its spelling row, untouched
    # Only whole-word tokens get dictionary evidence: here none of the dictionary's words is one token, so with stem
    # matching off nothing does; with it, only pieces after a space that share a stem with a dictionary word.
    exact = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            dictionary_evidence(
                entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(stem_match=0, cognates=0.0)
            )
        ],
    )
    assert exact.coverage()["dictionary"] == 0
    pieces = target_tokenizer.convert_ids_to_tokens(np.flatnonzero(m.origin == Origin.DICTIONARY).tolist())
    assert pieces and all(p.startswith("▁") for p in pieces)


def test_malformed_dictionaries_get_clear_errors(tmp_path, source_tokenizer, target_tokenizer):
    for text, message, line in (
        ("God\tDios\nearth\n", "has 1 column", 2),
        ("God\tDios\tmany\n", "not a positive number", 1),
        ("God\tDios\ta\tb\n", "has 4 columns", 1),
    ):
        path = write_lines(tmp_path / "bad.tsv", text.splitlines())
        with pytest.raises(TweetyError, match=message) as e:
            dictionary_evidence(read_dictionary(path), source_tokenizer, target_tokenizer)
        assert f"bad.tsv:{line}" in str(e.value)
    with pytest.raises(TweetyError, match="no Snowball stemmer called 'klingon'"):
        DictionarySettings(stemmer="klingon")
    # Entries the method cannot use (a phrase as the target) give no evidence rather than an error.
    e = dictionary_evidence(
        [DictionaryEntry("a shop where drugs are sold", "coffeeshop"), DictionaryEntry("pharmacy", "la farmacia")],
        source_tokenizer,
        target_tokenizer,
    )
    assert e.counts.nnz == 0 and np.asarray(e.counts.shape).tolist() == [len(target_tokenizer), len(source_tokenizer)]


def test_inflected_forms_borrow_their_lemmas_translations(source_tokenizer, target_tokenizer):
    # Real FreeDict entries; the running text has the inflected forms, which the dictionary lacks.
    entries = [
        DictionaryEntry("son", "hijo"),
        DictionaryEntry("woman", "mujer"),
        DictionaryEntry("wife", "mujer"),
        DictionaryEntry("house", "casa"),
        DictionaryEntry("marry", "casar"),
        DictionaryEntry("the", "la"),
        DictionaryEntry("of", "de"),
        DictionaryEntry("from", "de"),
    ]
    table = translations(entries)
    found = by_stem(
        ["hijos", "mujeres", "casas", "hijas", "su", "hijo"],
        table,
        DictionarySettings(stem_match=4, max_ending=3, plural_endings=(), wider_pool=0, fallback_ending=0),
    )
    assert found["hijos"] == [("son", 1.0)]
    assert dict(found["mujeres"]) == {"woman": 0.5, "wife": 0.5}  # each lemma counts 1, spread over its senses
    assert found["casas"] == [("house", 1.0)]  # `casa` + s, not `casar`
    assert "hijas" not in found  # `hij` is shorter than 4 letters: no lemma
    assert "su" not in found and "hijo" not in found  # too short; already in the dictionary
    assert by_stem(["hijos"], table, DictionarySettings())["hijos"] == [("sons", 1.0), ("son", 0.5)]  # the default
    # The default pools the lemmas of a prefix one letter shorter too (`cas`: `casa` and `casar`), and a word no lemma
    # matches within 6 letters tries again within 8 (`trescientos` = `tres` + 7 letters).
    table = translations([*entries, DictionaryEntry("three", "tres")])
    singular = DictionarySettings(plural_endings=())
    found = by_stem(["casas", "trescientos"], table, singular)
    assert dict(found["casas"]) == {"house": 1.0, "marry": 1.0} and found["trescientos"] == [("three", 1.0)]
    found = by_stem(["casas", "trescientos"], table, replace(singular, wider_pool=0, fallback_ending=0))
    assert found == {"casas": [("house", 1.0)]}

    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)  # the default settings
    assert row(m, source_tokenizer, target_tokenizer, "▁hijo") == {"Ġson": pytest.approx(1.0)}
    assert row(m, source_tokenizer, target_tokenizer, "▁hijos") == {
        "Ġsons": pytest.approx(2 / 3),
        "Ġson": pytest.approx(1 / 3),
    }
    # ` womans` and ` wifes` are no source tokens: only the singulars are left.
    assert row(m, source_tokenizer, target_tokenizer, "▁mujeres") == {
        "Ġwoman": pytest.approx(0.5),
        "Ġwife": pytest.approx(0.5),
    }
    # `la` and `de` are source tokens already (` la`, ` de`): they keep their spelling rows, not ` the` / ` of`.
    fvt = fvt_mapping(source_tokenizer, target_tokenizer)
    for piece in ("▁la", "▁de"):
        t = target_tokenizer.convert_tokens_to_ids(piece)
        assert m.origin[t] == Origin.FVT and (m.matrix[t] != fvt.matrix[t]).nnz == 0
    exact = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            dictionary_evidence(
                entries,
                source_tokenizer,
                target_tokenizer,
                settings=DictionarySettings(stem_match=0, spelling_kept_from=0, cognates=0.0),
            )
        ],
    )
    assert row(exact, source_tokenizer, target_tokenizer, "▁la") == {"Ġthe": pytest.approx(1.0)}
    for piece in ("▁hijos", "▁mujeres", "▁hijas"):
        t = target_tokenizer.convert_tokens_to_ids(piece)
        assert exact.origin[t] == Origin.FVT and (exact.matrix[t] != fvt.matrix[t]).nnz == 0


def test_names_and_loanwords_take_the_source_word_spelled_like_them(source_tokenizer, target_tokenizer):
    # Cognates among the real source vocabulary's words: accents and case ignored, the lower-case spelling preferred.
    found = by_spelling(
        ["efecto", "jacobo", "imaginaciones", "sacrificio"], list(whole_words(source_tokenizer).values()), cutoff=0.8
    )
    assert {w: s for w, [(s, _)] in found.items()} == {
        "efecto": "effect",
        "jacobo": "Jacob",
        "imaginaciones": "imaginations",
        "sacrificio": "sacrific",
    }
    # Nothing spelled alike enough (`casa` ~ `cases` 0.67), a different first letter, or too short: no evidence.
    assert by_spelling(["casa", "faraón", "mar"], ["cases", "Pharaoh", "mare", "Nation"], cutoff=0.8) == {}
    assert by_spelling(["nación", "templo"], ["Nation", "nation", "Temple"], cutoff=0.8) == {
        "nación": [("nation", 1.0)],
        "templo": [("Temple", 1.0)],
    }
    # A short word only takes a source word spelled the same but for accents (the unaccented one: `a`, not `à`), and
    # none where the source has the word itself (`dé`).
    assert by_spelling(["á", "qué", "dé", "mar"], ["à", "a", "Qué", "que", "dé", "de", "mare"], cutoff=0.8) == {
        "á": [("a", 1.0)],
        "qué": [("que", 1.0)],
    }
    # By default a whole word that neither the dictionary nor its stems cover takes its cognate's row.
    entries = [DictionaryEntry("son", "hijo")]
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    assert row(m, source_tokenizer, target_tokenizer, "▁animales") == {"Ġanimals": pytest.approx(1.0)}
    assert row(m, source_tokenizer, target_tokenizer, "▁Canaán") == {"ĠCanaan": pytest.approx(1.0)}
    off = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            dictionary_evidence(entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(cognates=0.0))
        ],
    )
    t = target_tokenizer.convert_tokens_to_ids("▁animales")
    assert off.origin[t] == Origin.FVT


@pytest.fixture(scope="module")
def russian_tokenizer(tmp_path_factory, source_tokenizer):
    """A tiny Russian tokenizer whose whole words include inflected forms (`книги`, `говорил`) and a loanword."""
    from core.tokenizer import TokenizerSettings, load_tokenizer, train_tokenizer

    lines = ["Компьютер читает книги, и компьютеры говорили о книге."] * 20 + ["Мой компьютер говорил: книга."] * 10
    out = tmp_path_factory.mktemp("ru") / "tokenizer"
    train_tokenizer(lines, source_tokenizer, out, TokenizerSettings(vocab_size=400))
    return load_tokenizer(out)


def test_the_language_chooses_plural_endings_and_stemmer():
    assert DictionarySettings.for_language("") == DictionarySettings()  # no code: the defaults measured on Spanish
    assert DictionarySettings.for_language("pt_BR").plural_endings == ("s",)
    assert DictionarySettings.for_language("ru-RU").plural_endings == ()  # measured worse with ы, и
    assert DictionarySettings.for_language("de").plural_endings == ()  # German plurals are no one ending
    # A stemmer where it measured better than the prefix rule alone (Russian, not Hungarian); Russian drops cognates
    # (measured worse); a language without a stemmer (Ukrainian) keeps the prefix rule alone.
    russian, hungarian = DictionarySettings.for_language("ru"), DictionarySettings.for_language("hu")
    assert russian.stemmer == "russian" and russian.cognates == 0 and hungarian.stemmer == ""
    assert DictionarySettings.for_language("uk").stemmer == "" and DictionarySettings.for_language("uk").stem_match == 3
    assert DictionarySettings.for_language("ru", plural_endings=("ы", "и")).plural_endings == ("ы", "и")  # the user's
    # A plural ending is the language's: Finnish `talot` is `talo` + t, which the -s rule would not see.
    table = translations([DictionaryEntry("house", "talo")])
    finnish = DictionarySettings.for_language("fi", plural_endings=("t",))
    assert by_stem(["talot"], table, finnish)["talot"] == [("houses", 1.0), ("house", 0.5)]
    assert by_stem(["talot"], table, DictionarySettings())["talot"] == [("house", 1.0)]


def test_a_stemmer_maps_inflected_forms_to_their_lemma():
    entries = [
        DictionaryEntry("book", "книга"),
        DictionaryEntry("speak", "говорить"),
        DictionaryEntry("speak", "hablar"),
    ]
    table = translations(entries)
    # The prefix rule off, so that only the Snowball stemmer can find the lemmas: `книги` (книг) is a plural of
    # `книга`, `говорил` (говор) a past tense of `говорить`, Spanish `hablaba` (habl) of `hablar`.
    stemmed = DictionarySettings.for_language("ru", stemmer="russian", stem_match=0, plural_endings=("ы", "и"))
    found = by_stem(["книги", "говорил", "книга", "компьютеры"], table, stemmed)
    assert found == {"книги": [("books", 1.0), ("book", 0.5)], "говорил": [("speak", 1.0)]}
    assert by_stem(["книги", "говорил"], table, DictionarySettings.for_language("ru", stem_match=0, stemmer="")) == {}
    spanish = DictionarySettings(stemmer="spanish", stem_match=0)
    assert by_stem(["hablaba", "habitación"], table, spanish) == {"hablaba": [("speak", 1.0)]}


def test_cognates_across_scripts_and_accents_only_where_the_script_has_them(source_tokenizer):
    words = list(whole_words(source_tokenizer).values())  # the real SmolLM2 vocabulary: ` i`, ` и`, ` computer`
    # Both spellings romanised (anyascii: komp'yuter) and spelled the way English borrows (c → k, y → i).
    assert by_spelling(["компьютер", "интернет"], words, cutoff=0.85) == {
        "компьютер": [("computer", 1.0)],
        "интернет": [("internet", 1.0)],
    }
    # Cyrillic has no accents to drop: `й` is not `и`; and a short word is no cognate of its romanisation (`и` ~ i).
    assert by_spelling(["й", "и", "мой"], ["и", "i", "moi", "мои"], cutoff=0.85) == {}
    assert by_spelling(["á"], ["и", "a"], cutoff=0.85) == {"á": [("a", 1.0)]}  # Latin keeps the accent rule
    # … where the language's accents are marks, not letters: Finnish `sä` (you) is no `sa`.
    assert not DictionarySettings.for_language("fi").fold_accents and DictionarySettings.for_language("es").fold_accents
    assert by_spelling(["sä", "á"], ["sa", "a"], cutoff=0.85, fold_accents=False) == {}


def test_a_russian_dictionary_maps_inflected_forms_and_loanwords(source_tokenizer, russian_tokenizer):
    entries = [DictionaryEntry("book", "книга"), DictionaryEntry("speak", "говорить")]
    # Plural endings and cognates on (Russian's defaults leave both off, measured worse on manuals): each rule works.
    settings = DictionarySettings.for_language("ru", plural_endings=("ы", "и"), cognates=0.85)
    m = build_mapping(
        source_tokenizer,
        russian_tokenizer,
        evidence=[dictionary_evidence(entries, source_tokenizer, russian_tokenizer, settings=settings)],
    )
    assert row(m, source_tokenizer, russian_tokenizer, "▁книги") == {
        "Ġbooks": pytest.approx(2 / 3),
        "Ġbook": pytest.approx(1 / 3),
    }
    assert row(m, source_tokenizer, russian_tokenizer, "▁говорил") == {"Ġspeak": pytest.approx(1.0)}
    assert row(m, source_tokenizer, russian_tokenizer, "▁компьютер") == {"Ġcomputer": pytest.approx(1.0)}


def test_a_projects_language_and_word_rules_reach_its_dictionary(tmp_path, source_tokenizer, russian_tokenizer):
    """The project's (and `tweety map --language`'s) language code chooses the dictionary's rules: Russian's leave
    cognates by spelling off (measured worse on Russian manuals), the default (no language) takes them; what the
    user chose instead (the wizard's word rules, `--cognates`, `--plural-endings`) wins, and is kept in project.json."""
    from core import resources, stages
    from core.dictionary import parse_endings
    from core.layout import Inputs, ProjectState

    found = [
        resources.Resource(
            resources.DICTIONARY, (str(write_lines(tmp_path / "ru.tsv", ["book\tкнига", "speak\tговорить"])),)
        )
    ]

    def mapped(inputs: Inputs) -> dict[str, float]:
        evidence = stages.evidence_of(
            found,
            lambda r: "",
            source_tokenizer,
            russian_tokenizer,
            rules=stages.word_rules(inputs.language_code, inputs.plural_endings, inputs.cognates),
        )
        return row(
            build_mapping(source_tokenizer, russian_tokenizer, evidence=evidence),
            source_tokenizer,
            russian_tokenizer,
            "▁компьютер",
        )

    assert mapped(Inputs("t.txt")) == {"Ġcomputer": pytest.approx(1.0)}
    russian = Inputs("t.txt", language_code="ru")
    assert "Ġcomputer" not in mapped(russian)
    chosen = replace(russian, cognates=True, plural_endings=parse_endings("ы, -и"))
    kept = ProjectState.from_dict(json.loads(json.dumps(ProjectState("m", inputs=chosen).to_dict()))).inputs
    assert kept == chosen and kept.plural_endings == ("ы", "и")
    assert mapped(kept) == {"Ġcomputer": pytest.approx(1.0)}
    assert stages.word_rules("es", parse_endings("none")).plural_endings == ()
    assert stages.word_rules("ru", cognates=False).cognates == 0 and stages.word_rules("ru").stemmer == "russian"
    with pytest.raises(TweetyError, match="not a word ending"):
        parse_endings("s, %s")
