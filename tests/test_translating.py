"""The translation memory, the held-out split, the translators and a project's translation (CLI included), on real
demo verses and the real SmolLM2 body."""

from __future__ import annotations

import json

import pytest

from conftest import demo_lines, verse_project, write_lines
from core import translators as T
from core.memory import TranslationMemory, split_pairs
from core.resources import DictionaryEntry


@pytest.fixture(scope="module")
def verses():
    return demo_lines("bible.train.en.gz", 2000), demo_lines("bible.train.es.gz", 2000)


def test_memory_finds_a_training_pair_for_its_own_source_line(verses):
    en, es = verses
    memory = TranslationMemory(en, es)
    for i in (0, 17, 999, 1999):
        found = memory.search(en[i], 3)
        assert found[0].target == memory.exact(en[i])
        assert found[0].source == " ".join(en[i].split())
        assert len(found) == 3 and found[1].score <= found[0].score
    # a line that is not in the memory: its closest pairs share its words, and the closest comes last as an example
    query = "And God said unto Noah, make thee an ark of gopher wood"
    assert memory.exact(query) is None
    examples = memory.examples(query, 4)
    assert len(examples) == 4
    assert "ark" in examples[-1][0].lower() or "noah" in examples[-1][0].lower()
    assert memory.search("zzzz qqqq", 4) == []


def test_the_language_of_a_text_from_each_sides_commonest_words(verses):
    """core.translation.written_in: English and Spanish sentences told apart by each side's commonest words (none of
    them verses of the corpus); too short, or no language clearly ahead, says nothing."""
    from core.translation import common_words, written_in

    en, es = verses
    common = {"en": common_words(en), "es": common_words(es)}
    assert written_in("The cat is on the table, and it sleeps.", common) == "en"
    assert written_in("El gato está en la mesa y duerme.", common) == "es"
    assert written_in("Hello", common) is None  # one word: too short to tell
    assert written_in("Pizza, pasta, tiramisu", common) is None  # none of either side's common words
    assert written_in("the la of de", common) is None  # as much of one as of the other


def test_heldout_pairs_never_occur_in_the_memory(verses):
    en, es = verses
    en = en + en[:50]  # repeated pairs are never held out
    es = es + es[:50]
    split = split_pairs(en, es, heldout=100)
    assert len(split.heldout_source) == 100
    assert len(split.train_source) == len(en) - 100
    train = set(split.train_source) | set(split.train_target)
    assert not train & (set(split.heldout_source) | set(split.heldout_target))
    assert not set(en[:50]) & set(split.heldout_source)
    assert split_pairs(en, es, heldout=100) == split  # the same pairs every time


def test_memory_backed_model_gets_examples_and_exact_matches_pass_through(verses):
    en, es = verses
    memory = TranslationMemory(en, es)
    seen = []

    def model(lines, examples):  # records its prompt's examples; answers nothing for one line
        seen.extend(examples)
        return ["" if "Cain" in line else "ok" for line in lines]

    translate = T.with_memory(memory, model, k=2, near=None, fallback=T.copy)
    out = translate([en[5], "", "Cain went out from the LORD", "The sons of Noah were many"])
    assert out[0] == memory.exact(en[5]) and out[1] == ""
    assert out[2] == "Cain went out from the LORD"  # the fallback answers what the model left empty
    assert out[3] == "ok"
    assert len(seen) == 2 and all(len(ex) == 2 for ex in seen)
    # a near-repeat (one word changed) comes from the memory too, by default
    changed = en[5].replace("God", "the LORD")
    assert changed != en[5] and memory.exact(changed) is None
    assert T.with_memory(memory, model, k=2)([changed]) == [memory.exact(en[5])]


def test_word_by_word_prefers_the_translation_seen_in_target_text():
    entries = [DictionaryEntry("house", "hogar"), DictionaryEntry("house", "casa"), DictionaryEntry("God", "Dios")]
    translate = T.word_by_word(entries, ["la casa de Dios", "una casa"])
    assert translate(["The house of God, Abram's house"]) == ["The casa of Dios, Abram's casa"]


def test_lexicon_learns_the_corpus_words_and_copies_names(verses, tmp_path):
    from core.lexicon import Lexicon, detokenize, learn

    en, es = verses
    lexicon = learn(en, es)
    assert lexicon.best["god"][0] == "Dios" and lexicon.best["lord"][0] == "Jehová"  # spelt as usually written
    assert lexicon.best["earth"][0] == "tierra"
    lines = ["Zorobabel saw the earth.", "", "And God said unto them"]
    out = lexicon.translate(lines)
    assert out[0].startswith("Zorobabel ") and "tierra" in out[0] and out[0].endswith("tierra.")
    assert out[1] == "" and out[2].startswith("Y Dios")
    lexicon.save(tmp_path / "lex.tsv")
    assert Lexicon.load(tmp_path / "lex.tsv").translate(lines) == out
    assert detokenize(["¿", "Qué", "?", "(", "sí", ")", ","]) == "¿Qué? (sí),"


def test_hints_give_the_corpus_words_of_what_the_examples_leave_out():
    """A model's prompt gets one-word pairs for the line's words that no example covers, the corpus's commonest
    words left out, at most `most` of them, before the retrieved examples."""
    from core.lexicon import Lexicon

    lexicon = Lexicon(
        {
            "open": ("öffnen", 0.9),
            "file": ("Datei", 0.9),
            "the": ("die", 0.9),
            "folder": ("Ordner", 0.8),
            "printer": ("Drucker", 0.7),
            "scanner": ("Scanner", 0.7),
        },
        frozenset(),
    )
    seen = []

    def model(lines, examples):
        seen.extend(examples)
        return list(lines)

    example = [("Open the file", "Datei öffnen")]
    T.with_hints(model, lexicon, frozenset({"the"}), most=2)(
        ["Open the folder, the printer and the scanner"], [example]
    )
    assert seen == [[("folder", "Ordner"), ("printer", "Drucker"), ("Open the file", "Datei öffnen")]]


def test_measure_ranks_systems_by_chrf(verses):
    en, es = verses
    scores = T.measure({"copy": T.copy, "perfect": lambda lines: [es[en.index(s)] for s in lines]}, en[:20], es[:20])
    assert scores["perfect"].chrf == 100.0 and scores["copy"].chrf < 40
    assert T.best(scores) == "perfect"
    assert "perfect" in T.verdict(scores)


@pytest.fixture(scope="module")
def project(module_tmp):
    """A real adapted project: 2,000 demo verse pairs, a small dictionary, a 1,000-token Spanish vocabulary."""
    return verse_project(module_tmp("translating"))


def translate_file_args(project, src, out) -> list[str]:
    """`tweety translate` of the file `src` (text or .po) into `out`, English to Spanish, with the project's best
    translator."""
    return [
        "translate",
        "--model",
        str(project),
        "--from",
        "en",
        "--to",
        "es",
        "--input",
        str(src),
        "--output",
        str(out),
    ]


def test_project_measures_its_translators_and_translates_a_file_with_the_best(project, tmp_path, capsys):
    from core.cli import main
    from core.project import Project

    assert main(["eval", "--model", str(project), "--translation", "--pairs", "12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["scores"]) == {
        "copy",
        "memory",
        "dictionary",
        "memory + dictionary",
        "corpus words",
        "memory + corpus words",
        "hydra",
    }
    assert list((project / "work" / "lexicon").glob("en-es-*.tsv"))  # learnt once, kept
    assert result["pairs"] == 12
    best = max(result["scores"], key=lambda n: result["scores"][n]["chrf"])
    recorded = json.loads((project / "project.json").read_text())["stages"]["translation"]["summary"]
    assert recorded["best"] == best == result["best"]
    card = (Project.open(project).model_dir / "README.md").read_text(encoding="utf-8")  # refreshed by the measurement
    assert "Translation, chrF on 12 held-out pairs" in card and f"| {best} | " in card

    src = write_lines(tmp_path / "in.en", ["And God said unto them,", "", "the earth"])
    out = tmp_path / "out.es"
    args = translate_file_args(project, src, out)
    assert main(args) == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[0] and lines[2]
    assert f"translated by: {best}" in capsys.readouterr().err
    # never over a user's file
    assert main(args) == 2


def test_project_translates_a_po_catalogue(project, tmp_path):
    import shutil
    import subprocess

    from core.cli import main

    po = tmp_path / "app.pot"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        '#, c-format\nmsgid "God said %s unto the earth"\nmsgstr ""\n\n'
        'msgid "_Open the earth"\nmsgstr ""\n',
        encoding="utf-8",
    )
    out = tmp_path / "es.po"
    assert main(translate_file_args(project, po, out)) == 0
    text = out.read_text(encoding="utf-8")
    assert "%s" in text.split('msgid "God said %s unto the earth"')[1]
    assert subprocess.run([shutil.which("msgfmt") or "msgfmt", "--check", "-o", "/dev/null", str(out)]).returncode == 0


def test_teaching_the_project_to_translate_lowers_heldout_loss_and_keeps_the_body_and_tables(project):
    """The tuning trains an adapter for en → es (core.hydra.lora): with it on, the held-out replies' loss falls;
    the body's own weights and every table are bit-identical; the adapter is saved, loaded back, and only on the body
    while the Hydra translates in its direction."""
    import torch

    from core import translating
    from core.hydra import lora, reply_loss, translate
    from core.project import Project

    p = Project.open(project)
    pairs = translating.split(p)
    held = list(zip(pairs.heldout_source, pairs.heldout_target))[:6]
    mem = translating.memory(p, "en", "es", pairs)

    def loss(hydra) -> float:
        with torch.no_grad():
            return float(reply_loss(hydra, "es", held, lambda s: mem.examples(s)))

    before = p.hydra()
    body = {k: v.clone() for k, v in before.model.state_dict().items()}
    start = loss(before)
    losses = translating.tune(p, steps=12, batch_size=2)
    assert len(losses) == 12
    after = Project.open(project).hydra()
    assert set(after.adapters) == {"en->es"}
    assert all(torch.equal(body[k], v) for k, v in after.model.state_dict().items())  # saved without the adapter
    for code in ("en", "es"):
        assert torch.equal(after.languages[code].embeddings, before.languages[code].embeddings)
        assert torch.equal(after.languages[code].head, before.languages[code].head)
    bare = loss(after)
    assert bare == pytest.approx(start, abs=1e-5)
    lora.use(after, "en", "es")
    assert loss(after) < start - 0.05
    lora.use(after, "es", "en")  # the other direction was not taught: the bare body
    assert after.lora is None and loss(after) == pytest.approx(start, abs=1e-5)
    translate(after, held[0][0], "en", "es")  # translating en → es puts the adapter on by itself
    assert after.lora is not None and after.lora[0] == "en->es"
    record = json.loads((project / "project.json").read_text())
    assert record["stages"]["hydra"]["summary"]["for"] == "translation" and "translation" not in record["stages"]
    assert record["stages"]["hydra"]["summary"]["trains"] == record["settings"]["hydra"]["trains"] == "lora"


def test_translate_with_a_project_resumes_after_a_kill(project, tmp_path):
    """SIGKILL while the project's Hydra translates a file (it measured best in this test's record), then the same
    command again: it resumes after the lines it had kept, and the output appears complete, one line each."""
    import signal
    import subprocess
    import sys
    import time

    from core.project import Project

    p = Project.open(project)
    if "translation" not in p.state.stages:  # run alone: measure first (what `translate` would do)
        from core import translating

        translating.evaluate(p, "en", "es", limit=4)
        p = Project.open(project)
    p.state.stages["translation"].summary["best"] = "hydra"  # the slow translator, so the kill lands mid-file
    p.save()
    lines = [f"And God said unto Noah, the {n} sons of the earth shall go out" for n in range(1, 25)]
    src = write_lines(tmp_path / "in.en", lines)
    out = tmp_path / "out.es"
    command = [sys.executable, "-m", "core.cli", *translate_file_args(project, src, out)]
    partial = tmp_path / ".out.es.partial"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and len(partial.read_text(encoding="utf-8").splitlines()) >= 2:  # header + a line
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    kept = len(partial.read_text(encoding="utf-8").splitlines()) - 1
    assert kept >= 1
    r = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming after line" in r.stderr and "translated by: hydra" in r.stderr
    translated = out.read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert len(translated) == len(lines) and all(translated)
    assert not partial.exists()


def _untaught(project):
    """The project with no tuned Hydra recorded, so that a tuning starts from the adapted tables (not from an
    earlier test's tuning)."""
    from core.project import Project

    p = Project.open(project)
    p.state.stages.pop("hydra", None)
    p.save()
    return p


def _stop_after(step: int, cancel):
    return lambda report: (report.metrics or {}).get("step", 0) >= step and cancel.cancel()


def test_teaching_to_translate_continues_after_a_cancel_to_the_same_tables(project):
    """Cancelled after 2 of 4 steps and taught again: the same losses and tables as 4 steps without a stop, and the
    checkpoint goes once the tables are kept. Other steps start over, saying so. (One pair a step: what is kept and
    restored does not depend on it.)"""
    import torch

    from core import translating
    from core.jobs import Cancelled, CancelToken
    from core.project import Project

    def tables() -> list:  # what the tuning trains: the en → es adapter
        adapter = Project.open(project).hydra().adapters["en->es"]
        return [adapter[name] for name in sorted(adapter)]

    whole = translating.tune(_untaught(project), steps=4, batch_size=1)
    expected = tables()
    p, cancel = _untaught(project), CancelToken()
    with pytest.raises(Cancelled):
        translating.tune(p, steps=4, batch_size=1, progress=_stop_after(2, cancel), cancel=cancel)
    assert "hydra" not in Project.open(project).state.stages  # it translates as before
    assert p.hydra_tuning_checkpoint().step == 2
    said = []
    losses = translating.tune(_untaught(project), steps=4, batch_size=1, progress=said.append)
    assert "continuing from step 2 of 4, where it stopped" in [r.message for r in said]
    assert losses == pytest.approx(whole, rel=1e-4)
    for got, want in zip(tables(), expected):
        torch.testing.assert_close(got, want)
    assert not p.hydra_checkpoint_dir.exists()

    cancel = CancelToken()
    with pytest.raises(Cancelled):
        translating.tune(_untaught(project), steps=4, batch_size=1, progress=_stop_after(1, cancel), cancel=cancel)
    said = []
    assert len(translating.tune(_untaught(project), steps=2, batch_size=1, progress=said.append)) == 2
    assert [r.message for r in said if "starting over" in r.message] == [
        "the tuning stopped at step 1 of 4 had other settings — the number of steps (4, now 2), the training pairs: "
        "starting over"
    ]
    assert not p.hydra_checkpoint_dir.exists()


def test_teaching_to_translate_from_the_cli_continues_after_a_kill(project):
    """`tweety finetune --stage translation` killed (SIGKILL) once its first checkpoint is kept, then the same
    command again: it continues from that step and records the whole tuning."""
    import signal
    import subprocess
    import sys
    import time

    from core.project import Project

    p = _untaught(project)
    state = p.hydra_checkpoint_dir / "state.json"
    command = [
        sys.executable,
        "-m",
        "core.cli",
        "finetune",
        "--model",
        str(project),
        "--stage",
        "translation",
        "--steps",
        "4",
    ]  # a checkpoint every step (a quarter of the run)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None and not state.exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate()
    kept = p.hydra_tuning_checkpoint()
    assert kept is not None and 1 <= kept.step < 4, err[-2000:]
    assert "hydra" not in Project.open(project).state.stages
    r = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"continuing from step {kept.step} of 4, where it stopped" in r.stderr
    assert Project.open(project).state.stages["hydra"].summary["steps"] == 4
    assert not p.hydra_checkpoint_dir.exists()
