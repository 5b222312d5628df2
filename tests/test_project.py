"""A project folder driven stage by stage (as the wizard does): state recorded, resumable, stale stages forgotten."""

from __future__ import annotations

import json

import pytest

from conftest import demo_lines, write_lines
from core.errors import TweetyError
from core.export import ExportSettings
from core.finetune import FinetuneSettings
from core.project import Inputs, Project
from core.resources import DICTIONARY, PARALLEL, Resource
from core.tokenizer import TokenizerSettings


def test_stages_are_recorded_resumable_and_invalidated(tmp_path, source, pairs):
    en, es = write_lines(tmp_path / "en.txt", pairs[0][:200]), write_lines(tmp_path / "es.txt", pairs[1][:200])
    held = write_lines(tmp_path / "held.txt", demo_lines("bible.heldout.es.gz", 20))
    project = Project.create(tmp_path / "proj")
    project._source = source  # the session's already-loaded SmolLM2 (same weights as load_model("default"))
    assert project.next_stage == "data"
    counts = project.set_inputs(
        Inputs(str(es), (Resource(PARALLEL, (str(en), str(es))),), "es", "Spanish", heldout_text=str(held))
    )
    assert counts == {"target lines": 200, "parallel pairs": 200, "held-out lines": 20}
    project.train_tokenizer(TokenizerSettings(vocab_size=700))
    assert project.align().summary["pairs"] == 200
    coverage = project.build_mapping().coverage()
    assert coverage["alignment"] > 0 and coverage["special"] == 17
    project.initialise()
    assert project.next_stage == "finetune" and project.final_model_dir == project.model_dir
    tuned = project.finetune(FinetuneSettings(steps=3, block_size=32, batch_size=2, eval_max_bytes=2000))
    assert tuned.final_bpb < tuned.initial_bpb and project.final_model_dir == project.finetune_dir
    bpb = project.evaluate(max_bytes=2000)
    assert bpb["adapted model"]["tokens_per_byte"] != bpb["source model"]["tokens_per_byte"]
    assert bpb["fine-tuned model"]["bits_per_byte"] < bpb["adapted model"]["bits_per_byte"]
    result = project.export(ExportSettings(type="q8_0"))
    assert result.path.parent == project.export_dir and result.path.exists()
    import gguf  # the exported model is the fine-tuned one, and says so

    assert gguf.GGUFReader(result.path).fields["tweety.finetune"].contents() == "embeddings, 3 steps"

    reopened = Project.open(project.folder)
    assert reopened.finished == ["data", "tokenizer", "align", "map", "init", "finetune", "evaluate", "export"]
    assert reopened.next_stage is None
    provenance = json.loads((project.model_dir / "project.json").read_text())
    assert provenance["language"] == "es" and set(provenance["inputs_sha256"]) == {"es.txt", "en.txt", "held.txt"}

    reopened._source = source
    reopened.train_tokenizer(TokenizerSettings(vocab_size=650))  # a new vocabulary makes everything after it stale
    assert Project.open(project.folder).finished == ["data", "tokenizer"]
    assert Project.open(project.folder).next_stage == "align"


def test_project_refuses_a_users_folder_and_missing_resources(tmp_path, pairs):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(TweetyError, match="never overwrites"):
        Project.create(mine)
    project = Project.create(tmp_path / "proj")
    es = write_lines(tmp_path / "es.txt", pairs[1][:50])
    with pytest.raises(TweetyError, match="translation resource"):
        project.set_inputs(Inputs(str(es), language_code="es"))
    with pytest.raises(TweetyError, match="Language & data"):
        project.inputs()


def test_finetuning_is_optional_and_held_out_text_is_split_off(tmp_path, pairs):
    from core.project import StageRecord

    es = write_lines(tmp_path / "es.txt", pairs[1][:200])
    project = Project.create(tmp_path / "proj")
    dictionary = Resource(DICTIONARY, (str(write_lines(tmp_path / "d.tsv", ["God\tDios"])),))
    project.set_inputs(Inputs(str(es), (dictionary,), "es"))
    train, held = project.texts()
    assert (len(train.read_text().splitlines()), len(held.read_text().splitlines())) == (190, 10)
    assert train.read_text() + held.read_text() == es.read_text()  # nothing lost, nothing trained on twice
    es2 = write_lines(tmp_path / "es2.txt", pairs[1][200:400])
    project.set_inputs(Inputs(str(es2), (dictionary,), "es"))
    assert project.texts()[1].read_text().splitlines() == pairs[1][390:400]  # new text, new split
    for stage in ("tokenizer", "align", "map", "init"):
        project.state.stages[stage] = StageRecord(0, "")
    assert project.next_stage == "finetune"
    project.state.stages["evaluate"] = StageRecord(0, "")
    assert project.next_stage == "export"  # evaluated without fine-tuning: it is not waited for
