"""The linguist in the loop: overrides, several weighted resources, provenance, and the fast streamed re-initialise,
on 400 real verse pairs, an 800-token Spanish tokenizer and the real SmolLM2 weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_lines
from core.align import align_corpus, load_counts
from core.errors import TweetyError
from core.mapping import (
    ALIGNMENT_KIND,
    DICTIONARY_KIND,
    FALLBACK,
    OVERRIDE,
    Evidence,
    Mapping,
    MappingSettings,
    Origin,
    build_mapping,
    dictionary_evidence,
)
from core.resources import (
    DictionaryEntry,
    OverrideLine,
    ParallelCorpus,
    Resource,
    format_override,
    read_overrides,
    read_resource_list,
)

ENTRIES = [DictionaryEntry("God", "Dios"), DictionaryEntry("earth", "tierra"), DictionaryEntry("light", "luz")]


@pytest.fixture(scope="module")
def counts(module_tmp, pairs, source_tokenizer, target_tokenizer):
    folder = module_tmp("align")
    align_corpus(ParallelCorpus(*pairs), source_tokenizer, target_tokenizer, folder)
    return load_counts(folder)


@pytest.fixture(scope="module")
def base(counts, source_tokenizer, target_tokenizer) -> Mapping:
    return build_mapping(source_tokenizer, target_tokenizer, alignment_counts=counts)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


def one(tokenizer, piece: str) -> int:
    return tokenizer.get_vocab()[piece]


def changed_rows(a: Mapping, b: Mapping) -> set[int]:
    return set(np.unique((a.matrix != b.matrix).nonzero()[0]).tolist())


def test_an_override_changes_exactly_the_rows_it_names(counts, base, source_tokenizer, target_tokenizer):
    overrides = [
        OverrideLine("[▁Dios]", "God", 2.0),
        OverrideLine("[▁Dios]", "[ĠLord]"),
        OverrideLine("tierra", "earth"),
    ]
    m = build_mapping(source_tokenizer, target_tokenizer, alignment_counts=counts, overrides=overrides)
    dios = one(target_tokenizer, "▁Dios")
    named = {dios, *ids(target_tokenizer, "tierra")}
    assert changed_rows(base, m) == named
    row = m.matrix[dios]
    got = {source_tokenizer.convert_ids_to_tokens(int(j)): float(w) for j, w in zip(row.indices, row.data)}
    assert got == pytest.approx({"ĠGod": 2 / 3, "ĠLord": 1 / 3})
    assert all(m.origin[t] == Origin.OVERRIDE for t in named)
    assert m.coverage()["override"] == len(named)
    assert abs(m.parts[OVERRIDE][dios] - m.matrix[dios]).max() == 0  # the whole row comes from the override


def test_a_minus_line_removes_a_link(counts, base, source_tokenizer, target_tokenizer):
    lengths = np.diff(base.matrix.indptr)
    t = int(next(i for i in np.flatnonzero(base.origin == Origin.ALIGNMENT) if lengths[i] >= 2))
    row = base.matrix[t].toarray().ravel()
    top = int(row.argmax())
    line = OverrideLine(
        f"[{target_tokenizer.convert_ids_to_tokens(t)}]",
        f"[{source_tokenizer.convert_ids_to_tokens(top)}]",
        remove=True,
    )
    m = build_mapping(source_tokenizer, target_tokenizer, alignment_counts=counts, overrides=[line])
    assert changed_rows(base, m) == {t}
    new = m.matrix[t].toarray().ravel()
    assert new[top] == 0 and new.sum() == pytest.approx(1.0)
    expected = row.copy()
    expected[top] = 0
    np.testing.assert_allclose(new, expected / expected.sum(), rtol=1e-6)
    assert m.origin[t] == Origin.ALIGNMENT


def test_two_resources_with_weights_1_and_0_reproduce_the_single_resource_mapping(
    counts, base, source_tokenizer, target_tokenizer
):
    both = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            Evidence("bible", ALIGNMENT_KIND, counts, 1.0),
            dictionary_evidence(ENTRIES, source_tokenizer, target_tokenizer, name="freedict", weight=0.0),
        ],
    )
    assert (both.matrix != base.matrix).nnz == 0 and (both.origin == base.origin).all()
    assert both.shares()["freedict"] == {"tokens": 0, "share": 0.0}


def test_by_default_a_dictionary_fills_in_where_the_corpus_has_no_evidence(
    counts, base, source_tokenizer, target_tokenizer
):
    entries = ENTRIES + [
        DictionaryEntry(en, es)
        for en, es in (
            ("waters", "aguas"),
            ("night", "noche"),
            ("day", "día"),
            ("seed", "simiente"),
            ("grass", "hierba"),
            ("evening", "tarde"),
            ("morning", "mañana"),
            ("man", "hombre"),
            ("sea", "mar"),
            ("fruit", "fruto"),
            ("tree", "árbol"),
            ("river", "río"),
            ("gold", "oro"),
            ("garden", "huerto"),
            ("beast", "bestia"),
        )
    ]
    both = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            Evidence("bible", ALIGNMENT_KIND, counts),
            dictionary_evidence(entries, source_tokenizer, target_tokenizer, name="freedict"),
        ],
    )
    only_dictionary = build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)
    aligned = np.diff(base.parts[ALIGNMENT_KIND].indptr) > 0
    from_dictionary = np.diff(only_dictionary.parts[DICTIONARY_KIND].indptr) > 0
    assert (aligned & from_dictionary).any() and (from_dictionary & ~aligned).any()
    for t in np.flatnonzero(aligned):  # the corpus's rows stay as they are
        assert abs(both.matrix[t] - base.matrix[t]).max() < 1e-6 and both.parts["freedict"][t].nnz == 0
    for t in np.flatnonzero(from_dictionary & ~aligned):  # the dictionary fills the gaps
        assert abs(both.matrix[t] - only_dictionary.matrix[t]).max() < 1e-6 and both.origin[t] == Origin.DICTIONARY


def test_resources_mix_by_weight_and_every_weight_says_where_it_came_from(
    counts, base, source_tokenizer, target_tokenizer, tmp_path
):
    only_dictionary = build_mapping(source_tokenizer, target_tokenizer, dictionary=ENTRIES)
    mixed = build_mapping(
        source_tokenizer,
        target_tokenizer,
        evidence=[
            Evidence("bible", ALIGNMENT_KIND, counts, 2.0),
            dictionary_evidence(ENTRIES, source_tokenizer, target_tokenizer, name="freedict", weight=1.0),
        ],
        settings=MappingSettings(dictionary_fills_gaps=False),
    )
    dios = one(target_tokenizer, "▁Dios")
    assert base.origin[dios] == Origin.ALIGNMENT and mixed.origin[dios] == Origin.ALIGNMENT_AND_DICTIONARY
    expected = (2 * base.matrix[dios] + only_dictionary.matrix[dios]) / 3
    assert abs(mixed.matrix[dios] - expected).max() < 1e-6
    assert abs(mixed.parts["bible"][dios] - 2 * base.matrix[dios] / 3).max() < 1e-6
    assert abs(sum(mixed.parts.values()) - mixed.matrix).max() < 1e-6
    shares = mixed.shares()
    assert set(shares) == {"bible", "freedict", OVERRIDE, FALLBACK}
    assert sum(s["share"] for s in shares.values()) == pytest.approx(1.0, abs=1e-3)
    mixed.save(tmp_path / "map", target_tokenizer, source_tokenizer)
    again = Mapping.load(tmp_path / "map")
    assert list(again.parts) == list(mixed.parts)
    assert all((again.parts[k] != mixed.parts[k]).nnz == 0 for k in mixed.parts)
    rows = {r["token"]: r for r in map(json.loads, (tmp_path / "map" / "mapping.jsonl").open(encoding="utf-8"))}
    god = next(i for i, s in enumerate(rows["▁Dios"]["sources"]) if s[0] == "ĠGod")
    provenance = rows["▁Dios"]["from"][god]
    assert set(provenance) == {"bible", "freedict"}
    assert sum(provenance.values()) == pytest.approx(rows["▁Dios"]["sources"][god][2], abs=2e-4)
    coverage = json.loads((tmp_path / "map" / "coverage.json").read_text())
    assert coverage["resources"]["freedict"]["tokens"] >= 2  # whole-word pieces only (`luz` is two pieces here)


def test_overrides_file_round_trip_and_clear_errors(tmp_path, source_tokenizer, target_tokenizer):
    lines = [
        OverrideLine("[▁Dios]", "God", 2.5),
        OverrideLine("tierra", "earth"),
        OverrideLine("[▁luz]", "[Ġlight]", remove=True),
    ]
    path = tmp_path / "overrides.tsv"
    path.write_text("# a comment\n\n" + "".join(format_override(o) + "\n" for o in lines), encoding="utf-8")
    back = read_overrides(path)
    assert [(o.target, o.source, o.weight, o.remove, o.line) for o in back] == [
        ("[▁Dios]", "God", 2.5, False, 3),
        ("tierra", "earth", 1.0, False, 4),
        ("[▁luz]", "[Ġlight]", 1.0, True, 5),
    ]
    (tmp_path / "comments.tsv").write_text("# nothing yet\n")
    assert read_overrides(tmp_path / "comments.tsv") == []
    for text, message in (
        ("casa\thouse\tmany\n", "not a positive number"),
        ("-\tcasa\n", "needs a target"),
        ("casa\n", "has 1 column"),
    ):
        (tmp_path / "bad.tsv").write_text(text)
        with pytest.raises(TweetyError, match=message) as e:
            read_overrides(tmp_path / "bad.tsv")
        assert "bad.tsv:1" in str(e.value)
    (tmp_path / "unknown.tsv").write_text("# header\n[▁NoSuchPiece]\tGod\n")
    with pytest.raises(TweetyError, match="not a token of the target vocabulary") as e:
        build_mapping(source_tokenizer, target_tokenizer, overrides=read_overrides(tmp_path / "unknown.tsv"))
    assert "unknown.tsv:2" in str(e.value)


def test_resource_list_toml_and_json(tmp_path):
    (tmp_path / "list.toml").write_text(
        '[[parallel]]\nfiles = ["kjv.en", "kjv.es"]\nweight = 2\nname = "kjv"\n\n'
        '[[parallel]]\nfiles = ["web.en", "web.es"]\n\n'
        '[[dictionary]]\nfile = "freedict.index"\nweight = 0.5\n'
    )
    got = read_resource_list(tmp_path / "list.toml")
    assert got == [
        Resource("parallel", (str(tmp_path / "kjv.en"), str(tmp_path / "kjv.es")), 2.0, "kjv"),
        Resource("parallel", (str(tmp_path / "web.en"), str(tmp_path / "web.es")), 1.0, ""),
        Resource("dictionary", (str(tmp_path / "freedict.index"),), 0.5, ""),
    ]
    (tmp_path / "list.json").write_text(json.dumps({"dictionary": [{"file": "d.tsv", "weight": 3}]}))
    assert read_resource_list(tmp_path / "list.json") == [Resource("dictionary", (str(tmp_path / "d.tsv"),), 3.0)]
    (tmp_path / "bad.toml").write_text('[[parallel]]\nfiles = ["a", "b", "c"]\n')
    with pytest.raises(TweetyError, match="takes 1 or 2 file"):
        read_resource_list(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text('{"corpus": []}')
    with pytest.raises(TweetyError, match=r"only \[\[parallel\]\]"):
        read_resource_list(tmp_path / "bad.json")


def test_adapt_with_two_weighted_corpora_of_one_target_text(tmp_path, pairs):
    """Two source-side texts aligned to the same target text (the paper's Tatar set-up, here two halves)."""
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    en, es = pairs
    files = {
        name: write_lines(tmp_path / name, lines)
        for name, lines in (
            ("a.en", en[:200]),
            ("a.es", es[:200]),
            ("b.en", en[200:]),
            ("b.es", es[200:]),
            ("all.es", es),
        )
    }
    (tmp_path / "fix.tsv").write_text("[▁Dios]\tGod\n")
    result = adapt(
        AdaptSettings(
            target_text=str(files["all.es"]),
            out=str(tmp_path / "out"),
            overrides=str(tmp_path / "fix.tsv"),
            resources=(
                Resource("parallel", (str(files["a.en"]), str(files["a.es"])), 2.0, "first"),
                Resource("parallel", (str(files["b.en"]), str(files["b.es"])), 1.0, "second"),
            ),
            tokenizer=TokenizerSettings(vocab_size=500),
        )
    )
    state = json.loads((result.out / "project.json").read_text())
    assert set(state["stages"]["align"]["summary"]) == {"first", "second"}
    assert state["stages"]["align"]["summary"]["second"]["pairs"] == 200
    shares = state["stages"]["map"]["summary"]["resources"]
    assert shares["first"]["tokens"] > 0 and shares["second"]["tokens"] > 0 and shares["override"]["tokens"] == 1
    m = Mapping.load(result.out / "work" / "mapping")
    both = (np.diff(m.parts["first"].indptr) > 0) & (np.diff(m.parts["second"].indptr) > 0)
    assert both.sum() > 10
    assert m.parts["first"][both].sum() > m.parts["second"][both].sum()  # weight 2 outweighs weight 1
    assert [r["name"] for r in state["inputs"]["resources"]] == ["first", "second"]


def test_streamed_initialisation_keeps_dtype_and_shards_and_equals_the_in_memory_one(
    tmp_path, source, base, target_tokenizer
):
    """A bf16 model in shards (truncated SmolLM2 config, random weights): the streamed adapted folder has the same
    shards, bf16 tensors, untouched body bytes, and the rows the in-memory initialisation computes."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from core.init import INDEX_FILE, initialise, initialise_folder

    config = source[0].config.to_dict()
    config.update(num_hidden_layers=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(**config)).to(torch.bfloat16)
    small.save_pretrained(tmp_path / "src", max_shard_size="30MB")
    assert (tmp_path / "src" / INDEX_FILE).exists()
    initialise_folder(tmp_path / "src", base, target_tokenizer, tmp_path / "out")
    shards = sorted(p.name for p in (tmp_path / "src").glob("*.safetensors"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards and len(shards) > 1
    streamed = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16)
    in_memory = initialise(AutoModelForCausalLM.from_pretrained(tmp_path / "src", dtype=torch.bfloat16), base)
    assert streamed.config.vocab_size == len(target_tokenizer)
    for name, tensor in in_memory.state_dict().items():
        assert torch.equal(streamed.state_dict()[name], tensor), name
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    for shard in shards:
        with safe_open(str(tmp_path / "out" / shard), "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())
            assert {k for k, v in index["weight_map"].items() if v == shard} == set(f.keys())
