"""A bilingual dictionary as mapping evidence, on the real SmolLM2 tokenizer, an 800-piece Spanish tokenizer trained
on 400 real verses, and real English–Spanish entries."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import write_lines
from core.dictionary import (DictionarySettings, by_spelling, by_stem, pseudo_parallel_counts, translate_word_by_word,
                             translations, whole_words)
from core.errors import TweetyError
from core.mapping import Origin, build_mapping, dictionary_evidence, fvt_mapping
from core.resources import DictionaryEntry, read_dictionary

# Real words the 800-piece tokenizer splits: every one shares a frequent sub-word piece with others (`en`, `iento`,
# `ció`, `ent`), which the first method linked to all of these unrelated source words.
SPLIT_WORDS = [("generations", "generaciones"), ("understanding", "entendimiento"), ("tale", "cuento"),
               ("wind", "viento"), ("commandment", "mandamiento"), ("creation", "creación"), ("nation", "nación"),
               ("tent", "tienda"), ("hundred", "ciento")]


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
    only = build_mapping(source_tokenizer, target_tokenizer, evidence=[dictionary_evidence(
        entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(cognates=0.0))])
    assert only.coverage()["dictionary"] == 3


def test_case_is_carried_over_and_senses_weigh(source_tokenizer, target_tokenizer):
    # The dictionary writes `dios`; the capitalised piece takes the capitalised source word.
    entries = [DictionaryEntry("god", "dios"), DictionaryEntry("earth", "tierra"), DictionaryEntry("land", "tierra"),
               DictionaryEntry("land", "país"), DictionaryEntry("land", "suelo"), DictionaryEntry("land", "terreno")]
    senses = DictionarySettings(sense_weights=True)
    m = build_mapping(source_tokenizer, target_tokenizer, evidence=[
        dictionary_evidence(entries, source_tokenizer, target_tokenizer, settings=senses)])
    assert row(m, source_tokenizer, target_tokenizer, "▁Dios") == {"ĠGod": pytest.approx(1.0)}
    # `land` has four senses, so it counts a quarter: earth 1, land 1/4 → 0.8 and 0.2.
    assert row(m, source_tokenizer, target_tokenizer, "▁tierra") == {"Ġearth": pytest.approx(0.8),
                                                                      "Ġland": pytest.approx(0.2)}
    assert translations(entries)["tierra"] == [("earth", 1.0), ("land", 1.0)]  # the default: every entry counts 1


def test_frequent_sub_word_pieces_are_not_hijacked(source_tokenizer, target_tokenizer):
    entries = [DictionaryEntry(en, es) for en, es in SPLIT_WORDS]
    fvt = fvt_mapping(source_tokenizer, target_tokenizer)
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    before = build_mapping(source_tokenizer, target_tokenizer, evidence=[dictionary_evidence(
        entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(method="entries"))])
    for piece in ("en", "ent", "iento", "ció"):
        t = target_tokenizer.convert_tokens_to_ids(piece)
        assert before.origin[t] == Origin.DICTIONARY  # the first method linked it to unrelated words
        assert m.origin[t] == Origin.FVT
        assert (m.matrix[t] != fvt.matrix[t]).nnz == 0  # its spelling row, untouched
    # Only whole-word tokens get dictionary evidence: here none of the dictionary's words is one token, so with stem
    # matching off nothing does; with it, only pieces after a space that share a stem with a dictionary word.
    exact = build_mapping(source_tokenizer, target_tokenizer, evidence=[dictionary_evidence(
        entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(stem_match=0, cognates=0.0))])
    assert exact.coverage()["dictionary"] == 0
    pieces = target_tokenizer.convert_ids_to_tokens(np.flatnonzero(m.origin == Origin.DICTIONARY).tolist())
    assert pieces and all(p.startswith("▁") for p in pieces)


def test_word_by_word_translation_and_its_alignment(source_tokenizer, target_tokenizer, pairs):
    entries = [DictionaryEntry("God", "Dios"), DictionaryEntry("earth", "tierra"), DictionaryEntry("and", "y"),
               DictionaryEntry("the", "la"), DictionaryEntry("the", "el"), DictionaryEntry("light", "luz"),
               DictionaryEntry("said", "dijo"), DictionaryEntry("waters", "aguas")]
    line = "Y dijo Dios: Sea la luz: y fué la luz."
    assert translate_word_by_word([line], entries) == ["And said God : Sea the light : and fué the light ."]
    counts = pseudo_parallel_counts(entries, pairs[1], source_tokenizer, target_tokenizer, DictionarySettings())
    dios = target_tokenizer.convert_tokens_to_ids("▁Dios")
    god = source_tokenizer.convert_tokens_to_ids("ĠGod")
    occurrences = sum(line.split().count("Dios") for line in pairs[1])
    assert counts[dios].toarray().argmax() == god and counts[dios].nnz == 1
    assert counts[dios, god] > 0.5 * occurrences  # linked in context, not at every occurrence (intersection)
    assert (counts.data >= 5).all()  # pairs seen fewer than 5 times are dropped
    m = build_mapping(source_tokenizer, target_tokenizer, evidence=[dictionary_evidence(
        entries, source_tokenizer, target_tokenizer, target_text=pairs[1],
        settings=DictionarySettings(method="pseudo-parallel"))])
    assert row(m, source_tokenizer, target_tokenizer, "▁Dios")["ĠGod"] > 0.9


def test_malformed_dictionaries_get_clear_errors(tmp_path, source_tokenizer, target_tokenizer):
    for text, message, line in (("God\tDios\nearth\n", "has 1 column", 2),
                                ("God\tDios\tmany\n", "not a positive number", 1),
                                ("God\tDios\ta\tb\n", "has 4 columns", 1)):
        path = write_lines(tmp_path / "bad.tsv", text.splitlines())
        with pytest.raises(TweetyError, match=message) as e:
            dictionary_evidence(read_dictionary(path), source_tokenizer, target_tokenizer)
        assert f"bad.tsv:{line}" in str(e.value)
    with pytest.raises(TweetyError, match="unknown dictionary method"):
        dictionary_evidence([DictionaryEntry("God", "Dios")], source_tokenizer, target_tokenizer,
                            settings=DictionarySettings(method="guess"))
    # Entries the method cannot use (a phrase as the target) give no evidence rather than an error.
    e = dictionary_evidence([DictionaryEntry("a shop where drugs are sold", "coffeeshop"),
                             DictionaryEntry("pharmacy", "la farmacia")], source_tokenizer, target_tokenizer)
    assert e.counts.nnz == 0 and np.asarray(e.counts.shape).tolist() == [len(target_tokenizer), len(source_tokenizer)]


def test_inflected_forms_borrow_their_lemmas_translations(source_tokenizer, target_tokenizer):
    # Real FreeDict entries; the running text has the inflected forms, which the dictionary lacks.
    entries = [DictionaryEntry("son", "hijo"), DictionaryEntry("woman", "mujer"), DictionaryEntry("wife", "mujer"),
               DictionaryEntry("house", "casa"), DictionaryEntry("marry", "casar"), DictionaryEntry("the", "la"),
               DictionaryEntry("of", "de"), DictionaryEntry("from", "de")]
    table = translations(entries)
    found = by_stem(["hijos", "mujeres", "casas", "hijas", "su", "hijo"], table,
                    DictionarySettings(stem_match=4, max_ending=3, plural=("", ""), wider_pool=0, fallback_ending=0))
    assert found["hijos"] == [("son", 1.0)]
    assert dict(found["mujeres"]) == {"woman": 0.5, "wife": 0.5}  # each lemma counts 1, spread over its senses
    assert found["casas"] == [("house", 1.0)]  # `casa` + s, not `casar`
    assert "hijas" not in found  # `hij` is shorter than 4 letters: no lemma
    assert "su" not in found and "hijo" not in found  # too short; already in the dictionary
    assert by_stem(["hijos"], table, DictionarySettings())["hijos"] == [("sons", 1.0), ("son", 0.5)]  # the default
    # The default pools the lemmas of a prefix one letter shorter too (`cas`: `casa` and `casar`), and a word no lemma
    # matches within 6 letters tries again within 8 (`trescientos` = `tres` + 7 letters).
    table = translations([*entries, DictionaryEntry("three", "tres")])
    singular = DictionarySettings(plural=("", ""))
    found = by_stem(["casas", "trescientos"], table, singular)
    assert dict(found["casas"]) == {"house": 1.0, "marry": 1.0} and found["trescientos"] == [("three", 1.0)]
    found = by_stem(["casas", "trescientos"], table, replace(singular, wider_pool=0, fallback_ending=0))
    assert found == {"casas": [("house", 1.0)]}

    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)  # the default settings
    assert row(m, source_tokenizer, target_tokenizer, "▁hijo") == {"Ġson": pytest.approx(1.0)}
    assert row(m, source_tokenizer, target_tokenizer, "▁hijos") == {"Ġsons": pytest.approx(2 / 3),
                                                                     "Ġson": pytest.approx(1 / 3)}
    # ` womans` and ` wifes` are no source tokens: only the singulars are left.
    assert row(m, source_tokenizer, target_tokenizer, "▁mujeres") == {"Ġwoman": pytest.approx(0.5),
                                                                       "Ġwife": pytest.approx(0.5)}
    # `la` and `de` are source tokens already (` la`, ` de`): they keep their spelling rows, not ` the` / ` of`.
    fvt = fvt_mapping(source_tokenizer, target_tokenizer)
    for piece in ("▁la", "▁de"):
        t = target_tokenizer.convert_tokens_to_ids(piece)
        assert m.origin[t] == Origin.FVT and (m.matrix[t] != fvt.matrix[t]).nnz == 0
    exact = build_mapping(source_tokenizer, target_tokenizer, evidence=[dictionary_evidence(
        entries, source_tokenizer, target_tokenizer,
        settings=DictionarySettings(stem_match=0, spelling_kept_from=0, cognates=0.0))])
    assert row(exact, source_tokenizer, target_tokenizer, "▁la") == {"Ġthe": pytest.approx(1.0)}
    for piece in ("▁hijos", "▁mujeres", "▁hijas"):
        t = target_tokenizer.convert_tokens_to_ids(piece)
        assert exact.origin[t] == Origin.FVT and (exact.matrix[t] != fvt.matrix[t]).nnz == 0


def test_names_and_loanwords_take_the_source_word_spelled_like_them(source_tokenizer, target_tokenizer):
    # Cognates among the real source vocabulary's words: accents and case ignored, the lower-case spelling preferred.
    found = by_spelling(["efecto", "jacobo", "imaginaciones", "sacrificio"],
                        list(whole_words(source_tokenizer).values()), cutoff=0.8)
    assert {w: s for w, [(s, _)] in found.items()} == {"efecto": "effect", "jacobo": "Jacob",
                                                       "imaginaciones": "imaginations", "sacrificio": "sacrific"}
    # Nothing spelled alike enough (`casa` ~ `cases` 0.67), a different first letter, or too short: no evidence.
    assert by_spelling(["casa", "faraón", "mar"], ["cases", "Pharaoh", "mare", "Nation"], cutoff=0.8) == {}
    assert by_spelling(["nación", "templo"], ["Nation", "nation", "Temple"], cutoff=0.8) == {
        "nación": [("nation", 1.0)], "templo": [("Temple", 1.0)]}
    # A short word only takes a source word spelled the same but for accents (the unaccented one: `a`, not `à`), and
    # none where the source has the word itself (`dé`).
    assert by_spelling(["á", "qué", "dé", "mar"], ["à", "a", "Qué", "que", "dé", "de", "mare"], cutoff=0.8) == {
        "á": [("a", 1.0)], "qué": [("que", 1.0)]}
    # By default a whole word that neither the dictionary nor its stems cover takes its cognate's row.
    entries = [DictionaryEntry("son", "hijo")]
    m = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    assert row(m, source_tokenizer, target_tokenizer, "▁animales") == {"Ġanimals": pytest.approx(1.0)}
    assert row(m, source_tokenizer, target_tokenizer, "▁Canaán") == {"ĠCanaan": pytest.approx(1.0)}
    off = build_mapping(source_tokenizer, target_tokenizer, evidence=[dictionary_evidence(
        entries, source_tokenizer, target_tokenizer, settings=DictionarySettings(cognates=0.0))])
    t = target_tokenizer.convert_tokens_to_ids("▁animales")
    assert off.origin[t] == Origin.FVT
