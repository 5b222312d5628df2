"""End to end through the `tweety` command line, on a few hundred real verse pairs and the real SmolLM2 weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import demo_lines, write_lines
from core.mapping import Mapping, Origin
from core.tokenizer import load_tokenizer


def tweety(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"tweety {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def files(module_tmp, pairs):
    d = module_tmp("cli")
    en, es = pairs
    write_lines(d / "train.en", en[:300])
    write_lines(d / "train.es", es[:300])
    write_lines(d / "heldout.es", demo_lines("bible.heldout.es.gz", 40))
    (d / "dict.tsv").write_text("God\tDios\nearth\ttierra\nwaters\taguas\n")
    return d


@pytest.fixture(scope="module")
def adapted(files):
    out = files / "adapted"
    tweety(
        "adapt",
        "--source-model",
        "default",
        "--target-text",
        files / "train.es",
        "--parallel",
        files / "train.en",
        files / "train.es",
        "--dictionary",
        files / "dict.tsv",
        "--vocab-size",
        1000,
        "--init",
        "transtok",
        "--symmetrize",
        "grow-diag-final-and",
        "--out",
        out,
    )
    return out


def test_adapt_writes_a_model_folder_and_project(adapted):
    state = json.loads((adapted / "project.json").read_text())
    assert set(state["stages"]) == {"data", "tokenizer", "align", "map", "init"}
    assert state["stages"]["align"]["summary"]["pairs"] == 300
    assert state["settings"]["align"]["symmetrize"] == "grow-diag-final-and"  # the option reached the aligner
    coverage = state["stages"]["map"]["summary"]
    assert coverage["alignment"] + coverage["alignment+dictionary"] > 50 and coverage["special"] == 17
    assert (adapted / "model" / "model.safetensors").exists()
    assert (adapted / "work" / "mapping" / "mapping.jsonl").exists()
    assert not list(adapted.parent.glob(".adapted.*"))  # no temporary leftovers


def test_word_rules_on_the_command_line_reach_the_projects_inputs():
    from core.cli import build_parser
    from core.cli.options import word_rules
    from core.pipeline import AdaptSettings, inputs_of

    a = build_parser().parse_args(
        [
            "adapt",
            "--target-text",
            "t.txt",
            "--vocab-size",
            "1000",
            "--out",
            "p",
            "--plural-endings",
            "s, -es",
            "--no-cognates",
        ]
    )
    inputs = inputs_of(AdaptSettings(target_text="t.txt", **word_rules(a)))
    assert (inputs.plural_endings, inputs.cognates) == (("s", "es"), False)
    a = build_parser().parse_args(["adapt", "--target-text", "t.txt", "--vocab-size", "1000", "--out", "p"])
    assert word_rules(a) == {"plural_endings": None, "cognates": None}  # the language's own


def test_eval_json_and_trans_tokenization_beats_mean(files, adapted):
    result = json.loads(tweety("eval", "--model", adapted, "--text", files / "heldout.es", "--json").stdout)
    assert set(result) >= {"bits_per_byte", "token_ppl", "tokens_per_byte"}
    text = (files / "heldout.es").read_text().rstrip("\n")
    assert result["bytes"] == len(text.encode())
    tweety(
        "init",
        "--tokenizer",
        adapted / "work" / "tokenizer",
        "--mapping",
        adapted / "work" / "mapping",
        "--init",
        "mean",
        "--out",
        files / "mean",
    )
    # A loose folder's model carries its provenance, as a project's does (the export and the model card read it).
    assert json.loads((files / "mean" / "project.json").read_text())["settings"]["init"]["method"] == "mean"
    mean = json.loads(tweety("eval", "--model", files / "mean", "--text", files / "heldout.es", "--json").stdout)
    assert mean["tokens_per_byte"] == result["tokens_per_byte"]  # same tokenizer
    assert result["bits_per_byte"] < mean["bits_per_byte"] - 0.2


def test_stepwise_commands_reproduce_adapt(files, adapted):
    d = files / "steps"
    tweety(
        "align",
        "--tokenizer",
        adapted / "work" / "tokenizer",
        "--parallel",
        files / "train.en",
        files / "train.es",
        "--symmetrize",
        "grow-diag-final-and",
        "--out",
        d / "align",
    )
    tweety(
        "map",
        "--tokenizer",
        adapted / "work" / "tokenizer",
        "--alignment",
        d / "align",
        "--dictionary",
        files / "dict.tsv",
        "--out",
        d / "map",
    )
    ours, theirs = Mapping.load(d / "map"), Mapping.load(adapted / "work" / "mapping")
    assert (ours.origin == theirs.origin).all()
    np.testing.assert_allclose((ours.matrix - theirs.matrix).toarray(), 0, atol=1e-6)


def test_overrides_edit_then_reinitialise_from_the_cached_alignment(files, adapted):
    """The linguist's round trip: map again with an overrides file from the saved counts, initialise again; exactly
    the rows the file names change, to the weighted averages it asks for."""
    from safetensors.torch import load_file

    from core.models import load_model

    d = files / "edit"
    d.mkdir()
    (d / "fix.tsv").write_text("[▁Dios]\tGod\t3\n[▁Dios]\tLord\n-\ttierra\t[Ġearth]\n", encoding="utf-8")
    work = adapted / "work"
    r = tweety(
        "map",
        "--tokenizer",
        work / "tokenizer",
        "--alignment",
        work / "alignment",
        "--dictionary",
        files / "dict.tsv",
        "--overrides",
        d / "fix.tsv",
        "--out",
        d / "map",
    )
    report = json.loads(r.stdout)
    # God→Dios is overridden; the dictionary's other words are aligned by the corpus, so it fills no gap with them
    # (only with cognates of whole words the corpus left unaligned: `core.dictionary.by_spelling`).
    assert report["origins"]["override"] == 1
    edited = Mapping.load(d / "map")
    ids = load_tokenizer(work / "tokenizer").convert_tokens_to_ids(["▁tierra", "▁aguas"])
    assert all(edited.origin[t] == Origin.ALIGNMENT for t in ids)
    # Loose inits without a target text are not calibrated (core.calibrate moves every row a little): the model
    # before the edit is initialised the same way, from the project's own mapping.
    tweety("init", "--tokenizer", work / "tokenizer", "--mapping", d / "map", "--out", d / "model")
    tweety("init", "--tokenizer", work / "tokenizer", "--mapping", work / "mapping", "--out", d / "before")

    old, new = Mapping.load(work / "mapping"), Mapping.load(d / "map")
    remapped = set(np.unique((old.matrix != new.matrix).nonzero()[0]).tolist())
    before, after = (
        load_file(f / "model.safetensors")["model.embed_tokens.weight"] for f in (d / "before", d / "model")
    )
    assert set((before != after).any(dim=1).nonzero().ravel().tolist()) == remapped
    source_model, source_tok = load_model("default")
    vocab = json.loads((work / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    dios, earth = vocab["▁Dios"], source_tok.convert_tokens_to_ids("Ġearth")
    tierra = vocab["▁tierra"]
    assert remapped == {dios, tierra} and old.matrix[tierra, earth] > 0 and new.matrix[tierra, earth] == 0
    e = source_model.get_input_embeddings().weight.detach()
    god, lord = (source_tok.convert_tokens_to_ids(t) for t in ("ĠGod", "ĠLord"))
    # The weighted average, stored in the model's own type (the converted source keeps BF16 matrices).
    expected = (0.75 * e[god] + 0.25 * e[lord]).to(after.dtype)
    assert (after[dios].float() - expected.float()).abs().max() < 1e-6


def test_an_adapt_folder_is_a_project_whose_stages_rerun_from_the_cli(files, adapted, tmp_path):
    """`tweety adapt` writes the wizard's project layout: it opens as a project waiting for fine-tuning, and one
    stage re-runs inside it (`--project`) with the recorded inputs, making the later stages stale."""
    import shutil

    from core.project import Project

    project = Project.open(adapted)
    assert project.next_stage == "finetune" and project.model_dir == adapted / "model"
    assert [r.kind for r in project.inputs().resources] == ["parallel", "dictionary"]
    copy = tmp_path / "copy"
    shutil.copytree(adapted, copy)
    (copy / "overrides.tsv").write_text("[▁Dios]\tGod\n", encoding="utf-8")
    report = json.loads(tweety("map", "--project", copy, "--top-k", "2").stdout)
    assert report["origins"]["override"] == 1
    state = json.loads((copy / "project.json").read_text())
    assert "init" not in state["stages"] and state["settings"]["mapping"]["top_k"] == 2
    assert Project.open(copy).next_stage == "init"
    tweety("init", "--project", copy)
    assert Project.open(copy).next_stage == "finetune"
    refused = tweety("map", "--project", copy, "--dictionary", files / "dict.tsv", check=False)
    assert refused.returncode == 2 and "overrides.tsv" in refused.stderr


def test_loose_map_refuses_a_dictionary_that_gives_no_tokens(files, tmp_path):
    """`tweety map` on loose folders runs the project's map stage (core.stages), its dictionary check included:
    with a target tokenizer that knows only <unk>, no entry gives a token, and nothing is written."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, "<unk>")), unk_token="<unk>"
    ).save_pretrained(tmp_path / "unknown")
    r = tweety(
        "map",
        "--tokenizer",
        tmp_path / "unknown",
        "--dictionary",
        files / "dict.tsv",
        "--out",
        tmp_path / "map",
        check=False,
    )
    assert r.returncode == 2 and "none of the dictionary's entries can be read into tokens" in r.stderr
    assert not (tmp_path / "map").exists()


@pytest.mark.parametrize(
    "command, flags",
    [
        ("adapt", ("--init", "--aligner", "--symmetrize", "--tokenizer-model")),
        ("init", ("--init", "--seed")),
        ("tokenizer", ("--tokenizer-model",)),
        ("align", ("--aligner", "--symmetrize")),
    ],
)
def test_baselines_are_an_advanced_group_of_the_help(command, flags, capsys):
    from core.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    main, advanced = capsys.readouterr().out.split("options:")[1].split("advanced (baselines):")  # after the usage
    assert all(flag in advanced and flag not in main for flag in flags), (main, advanced)


def test_a_baseline_initialisation_skips_the_alignment(files, tmp_path):
    """`--init fvt` reads no alignment, so `tweety adapt` does not align (44 s on 137k pairs): no alignment is
    written, the map stage uses none, and trans-tokenization on that project is refused until it is aligned."""
    out = tmp_path / "fvt"
    tweety(
        "adapt",
        "--target-text",
        files / "train.es",
        "--parallel",
        files / "train.en",
        files / "train.es",
        "--vocab-size",
        1000,
        "--init",
        "fvt",
        "--out",
        out,
    )
    state = json.loads((out / "project.json").read_text())
    assert state["stages"]["align"]["summary"]["unused_by"] == "fvt" and not (out / "work" / "alignment").exists()
    assert state["stages"]["map"]["summary"]["alignment"] == 0 and (out / "model" / "model.safetensors").exists()
    refused = tweety("init", "--project", out, check=False)
    assert refused.returncode == 2 and "tweety align --project" in refused.stderr
    from core.init import InitSettings
    from core.project import Project

    project = Project.open(out)  # what the refusal asks: align (an explicit align always aligns), map, initialise
    project.align()
    project.build_mapping()
    project.initialise(InitSettings())
    assert (out / "work" / "alignment").exists() and project.state.stages["map"].summary["alignment"] > 0


def test_never_overwrites_a_users_folder_and_reports_bad_input(files, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    r = tweety(
        "adapt",
        "--target-text",
        files / "train.es",
        "--parallel",
        files / "train.en",
        files / "train.es",
        "--vocab-size",
        1000,
        "--out",
        mine,
        check=False,
    )
    assert r.returncode == 2 and "never overwrites your files" in r.stderr
    assert (mine / "thesis.txt").read_text() == "precious"
    write_lines(tmp_path / "short.en", ["one", "two"])
    r = tweety(
        "adapt",
        "--target-text",
        files / "train.es",
        "--parallel",
        tmp_path / "short.en",
        files / "train.es",
        "--vocab-size",
        1000,
        "--out",
        tmp_path / "new",
        check=False,
    )
    assert r.returncode == 2 and "has 2 lines but train.es has 300" in r.stderr
    assert not (tmp_path / "new").exists()


def test_export_translate_and_chat_commands(files, adapted):
    gguf = files / "model.gguf"
    out = tweety("export", "--model", adapted, "--out", gguf, "--type", "q8_0", "--language", "es").stdout
    assert "q8_0" in out and gguf.stat().st_size > 50e6
    again = tweety("export", "--model", adapted, "--out", gguf, check=False)
    assert again.returncode == 2 and "never overwrites" in again.stderr
    # At step 0 (no fine-tuning) a tiny model may answer with nothing; the command must still work and say so.
    r = tweety("translate", "--gguf", gguf, "--from", "en", "--to", "es", "In the beginning God created")
    assert r.stdout.strip() or "no translation" in r.stderr
    write_lines(files / "verses.en", ["And God said.", "", "And it was so."])
    tweety("translate", "--gguf", gguf, "--from", "en", "--to", "es", "--input", files / "verses.en")
    assert (files / "verses.en.es.txt").read_text(encoding="utf-8").count("\n") == 3
    chat = subprocess.run(
        [sys.executable, "-m", "core.cli", "chat", "--gguf", str(gguf), "--temperature", "0"],
        input="Hola\n/reset\n/quit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert chat.returncode == 0 and chat.stdout.count("model> ") == 1 and "Chat started" in chat.stderr
