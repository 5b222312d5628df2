"""A project folder driven stage by stage (as the wizard does): state recorded, resumable, stale stages forgotten."""
from __future__ import annotations

import json

import pytest

from conftest import demo_lines, write_lines
from core.errors import TweetyError
from core.export import ExportSettings
from core.project import Inputs, Project
from core.tokenizer import TokenizerSettings


def test_stages_are_recorded_resumable_and_invalidated(tmp_path, source, pairs):
    en, es = write_lines(tmp_path / "en.txt", pairs[0][:200]), write_lines(tmp_path / "es.txt", pairs[1][:200])
    held = write_lines(tmp_path / "held.txt", demo_lines("bible.heldout.es.gz", 20))
    project = Project.create(tmp_path / "proj")
    project._source = source  # the session's already-loaded SmolLM2 (same weights as load_model("default"))
    assert project.next_stage == "data"
    counts = project.set_inputs(Inputs("Spanish", "es", str(es), (str(en), str(es)), None, str(held)))
    assert counts == {"target lines": 200, "parallel pairs": 200, "held-out lines": 20}
    project.train_tokenizer(TokenizerSettings(vocab_size=700))
    assert project.align().pairs == 200
    coverage = project.build_mapping().coverage()
    assert coverage["alignment"] > 0 and coverage["special"] == 17
    project.initialise()
    bpb = project.evaluate(max_bytes=2000)
    assert bpb["adapted model"]["tokens_per_byte"] != bpb["source model"]["tokens_per_byte"]
    result = project.export(ExportSettings(type="q8_0"))
    assert result.path.parent == project.export_dir and result.path.exists()

    reopened = Project.open(project.folder)
    assert reopened.finished == ["data", "tokenizer", "align", "map", "init", "evaluate", "export"]
    assert reopened.next_stage is None
    provenance = json.loads((project.model_dir / "project.json").read_text())
    assert provenance["language"] == "es" and set(provenance["inputs_sha256"]) == {"es.txt", "en.txt"}

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
        project.set_inputs(Inputs("Spanish", "es", str(es)))
    with pytest.raises(TweetyError, match="Language & data"):
        project.inputs()
