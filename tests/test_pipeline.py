"""One pipeline, one project folder: `tweety adapt`'s output, the wizard's project and older folders are the same
thing, run by the same stages (real SmolLM2 weights, a few hundred real verse pairs)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import write_lines
from core.errors import TweetyError
from core.jobs import Cancelled, CancelToken
from core.mapping import Mapping
from core.pipeline import AdaptSettings, adapt
from core.project import Inputs, Project
from core.resources import DICTIONARY, PARALLEL, Resource
from core.tokenizer import TokenizerSettings


@pytest.fixture(scope="module")
def files(module_tmp, pairs):
    d = module_tmp("pipeline")
    en, es = pairs
    for name, lines in (("a.en", en[:200]), ("a.es", es[:200]), ("b.en", en[200:]), ("b.es", es[200:]), ("all.es", es)):
        write_lines(d / name, lines)
    (d / "dict.tsv").write_text("God\tDios\nearth\ttierra\nwaters\taguas\n")
    return d


def _resources(d):
    return (
        Resource(PARALLEL, (str(d / "a.en"), str(d / "a.es")), 2.0, "first"),
        Resource(PARALLEL, (str(d / "b.en"), str(d / "b.es")), 1.0, "second"),
        Resource(DICTIONARY, (str(d / "dict.tsv"),), 0.5),
    )


@pytest.fixture(scope="module")
def adapted(files):
    """`tweety adapt` (core.pipeline.adapt) with two weighted corpora and a weighted dictionary."""
    return adapt(
        AdaptSettings(
            target_text=str(files / "all.es"),
            resources=_resources(files),
            language="es",
            out=str(files / "adapted"),
            tokenizer=TokenizerSettings(vocab_size=600),
        )
    ).project


def test_a_project_built_stage_by_stage_equals_adapt(files, adapted, source, tmp_path):
    """What the wizard does (one stage per button, the same weighted resources) gives adapt's mapping exactly."""
    project = Project.create(tmp_path / "wizard")
    project._source = source
    counts = project.set_inputs(Inputs(str(files / "all.es"), _resources(files), "es", "Spanish"))
    assert counts == {"target lines": 400, "parallel pairs": 400, "dictionary entries": 3}
    project.train_tokenizer(TokenizerSettings(vocab_size=600))
    assert set(project.align().summary) == {"first", "second"}
    ours, theirs = project.build_mapping(), Mapping.load(adapted.mapping_dir)
    assert (ours.origin == theirs.origin).all() and set(ours.parts) == set(theirs.parts)
    np.testing.assert_allclose((ours.matrix - theirs.matrix).toarray(), 0, atol=1e-6)
    shares = project.state.stages["map"].summary["resources"]
    # The dictionary's words are all aligned by the corpora here: it only fills gaps (with cognates of whole words the
    # corpora left unaligned, `core.dictionary.by_spelling`), so no row mixes it with a corpus.
    assert shares["first"]["tokens"] > 0 and shares["second"]["tokens"] > 0
    rows = {name: np.diff(part.indptr) > 0 for name, part in ours.parts.items()}
    assert not (rows["dict.tsv"] & (rows["first"] | rows["second"])).any()
    project.initialise()
    assert project.next_stage == "finetune" and (project.model_dir / "config.json").exists()


def test_adapt_output_is_a_project_that_resumes_at_finetuning(adapted):
    reopened = Project.open(adapted.folder)
    assert reopened.finished == ["data", "tokenizer", "align", "map", "init"]
    assert reopened.next_stage == "finetune" and reopened.final_model_dir == adapted.folder / "model"
    assert [r.weight for r in reopened.inputs().resources] == [2.0, 1.0, 0.5]
    provenance = json.loads((adapted.model_dir / "project.json").read_text())  # what the GGUF export reads
    assert provenance["language"] == "es" and provenance["stages"] == {}


def test_an_older_adapt_folder_opens_with_its_model_at_the_root(adapted, tmp_path):
    """Before the one layout, `tweety adapt` wrote the model at the folder root and single-resource fields."""
    old = tmp_path / "old"
    shutil.copytree(adapted.folder, old)
    state = json.loads((old / "project.json").read_text())
    shutil.rmtree(old / "model")
    for f in adapted.model_dir.iterdir():
        if f.name != "project.json":
            shutil.copy(f, old / f.name)
    first = state["inputs"]["resources"][0]["files"]
    legacy = {
        "source_model": "default",
        "target_text": state["inputs"]["target_text"],
        "parallel": first,
        "dictionary": None,
        "language": "es",
        "inputs_sha256": {},
        "settings": {"resources": [{"kind": "parallel", "files": first, "weight": 1.0, "name": ""}]},
        "stages": {k: v for k, v in state["stages"].items() if k != "data"},
    }
    legacy["stages"]["init"]["output"] = "."
    (old / "project.json").write_text(json.dumps(legacy))
    project = Project.open(old)
    assert project.model_dir == old.resolve() and project.next_stage == "finetune"
    assert project.inputs().parallel[0].files == tuple(first) and project.state.language == "es"
    (old / "project.json").write_text("{broken")
    with pytest.raises(TweetyError, match="project.json is damaged"):
        Project.open(old)


def test_a_model_trained_elsewhere_is_recorded_back(adapted, tmp_path):
    project = Project.open(adapted.folder)
    elsewhere = tmp_path / "cluster-output"
    shutil.copytree(project.model_dir, elsewhere)
    project.record_finetuned(elsewhere)
    reopened = Project.open(adapted.folder)
    assert reopened.final_model_dir == elsewhere.resolve() and reopened.next_stage == "evaluate"
    config = json.loads((elsewhere / "config.json").read_text())
    (elsewhere / "config.json").write_text(json.dumps({**config, "vocab_size": 123}))
    with pytest.raises(TweetyError, match="vocab_size is 123"):
        reopened.record_finetuned(elsewhere)
    reopened.discard_finetune()
    assert Project.open(adapted.folder).final_model_dir == adapted.folder / "model"


def test_hydra_tuning_changes_the_tables_and_can_be_cancelled(adapted, source):
    from core.hydra import HydraTuning

    project = Project.open(adapted.folder)
    project._source = source
    before = project.hydra().languages["es"].embeddings.detach().clone()
    cancel = CancelToken()

    def stop_after_first_step(p):
        if p.done >= 1:
            cancel.cancel()

    with pytest.raises(Cancelled):
        project.tune_hydra(
            settings=HydraTuning(steps=5, batch_size=2, warmup_steps=1),
            lines=8,
            progress=stop_after_first_step,
            cancel=cancel,
        )
    assert "hydra" not in Project.open(adapted.folder).state.stages and not project.hydra_dir.exists()
    losses = project.tune_hydra(settings=HydraTuning(steps=2, batch_size=2, warmup_steps=1), lines=8)
    assert len(losses) == 2 and all(np.isfinite(losses))
    reopened = Project.open(adapted.folder)
    assert reopened.state.stages["hydra"].summary["pairs"] == 8
    reopened._source = source
    after = reopened.hydra().languages["es"].embeddings.detach()  # the tuned Hydra, loaded from hydra/
    assert after.shape == before.shape and not np.allclose(after.numpy(), before.numpy())


def test_a_dictionary_no_entry_of_which_reads_into_tokens_is_refused(tmp_path, source_tokenizer):
    """With a tokenizer that knows only <unk> (no byte fallback), no entry gives a target token."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from core import stages

    unknown = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, "<unk>")), unk_token="<unk>"
    )
    d = write_lines(tmp_path / "d.tsv", ["God\tΘεός", "earth\tγη"])
    with pytest.raises(TweetyError, match="d.tsv: none of the dictionary's entries can be read into tokens"):
        stages.check_tokenizes(Resource(DICTIONARY, (str(d),)).read(), source_tokenizer, unknown, str(d))
