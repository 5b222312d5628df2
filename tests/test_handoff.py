"""Hand-offs (core.handoff): the Ollama Modelfile's TEMPLATE renders exactly the GGUF's own chat template, the model
card loads back with its metadata and the project's measurements, LM Studio's layout is made without replacing
anyone's files, and the Export page offers both (offscreen Qt). Tiny random-weight models (tests/test_families.py)
keep every export under a second."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_families import save, tiny_model

from core import handoff as H
from core.errors import TweetyError
from core.export import ExportSettings, export_gguf
from core.layout import Inputs, ProjectState, StageRecord
from core.models import DEFAULT_MODEL, GEMMA_CHAT_TEMPLATE
from core.resources import PARALLEL, Resource

# Three conversations (system + two user turns, two user turns without a system prompt, one turn): the Modelfile's
# TEMPLATE must give what the Jinja template gives for each.
CONVERSATIONS = [
    [
        {"role": "system", "content": "Eres un traductor cuidadoso."},
        {"role": "user", "content": "Buenos días."},
        {"role": "assistant", "content": "Good morning."},
        {"role": "user", "content": "¿Y buenas noches?"},
    ],
    [
        {"role": "user", "content": "Hola, ¿quién eres?"},
        {"role": "assistant", "content": "Un modelo.\nPequeño."},
        {"role": "user", "content": "Cuéntame una historia."},
    ],
    [{"role": "user", "content": "Dime algo."}],
]


def _model_folder(kind: str, tokenizer, folder: Path) -> Path:
    """A tiny model whose tokenizer carries the shape's chat template: the adapted SmolLM2 vocabulary keeps ChatML
    with SmolLM2's default English system prompt; a Gemma 3 gets the family's template (core.models)."""
    from transformers import AutoTokenizer

    save(tiny_model("llama" if kind == "chatml" else "gemma3_text", tokenizer), tokenizer, folder)
    if kind == "gemma":
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = GEMMA_CHAT_TEMPLATE
        tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["chatml", "gemma"])
def exported(request, target_tokenizer, module_tmp):
    """(shape, model folder, F32 GGUF)."""
    tmp = module_tmp(request.param)
    folder = _model_folder(request.param, target_tokenizer, tmp / "model")
    return request.param, folder, export_gguf(folder, tmp / "export" / "tiny.gguf", ExportSettings(type="f32")).path


def modelfile_commands(text: str) -> list[tuple[str, str]]:
    """(COMMAND, argument) of a Modelfile, read as Ollama's parser reads it: `#` lines are comments, an argument in
    triple quotes keeps every character between them, one in plain quotes loses them."""
    out = []
    for m in re.finditer(r'^(?!#)(\w+) (?:"""(.*?)"""|"(.*?)"|(.*?))$', text, re.M | re.S):
        out.append((m.group(1).upper(), next(g for g in m.groups()[1:] if g is not None)))
    return out


def test_modelfile_template_renders_what_the_gguf_chat_template_renders(exported):
    import gguf
    from transformers import AutoTokenizer

    shape, folder, path = exported
    reader = gguf.GGUFReader(path)
    jinja = reader.fields["tokenizer.chat_template"].contents()
    adds_bos = bool(reader.fields["tokenizer.ggml.add_bos_token"].contents())
    tok = AutoTokenizer.from_pretrained(folder)
    assert jinja == tok.chat_template
    if shape == "chatml":
        assert "You are a helpful AI assistant named SmolLM" in jinja  # SmolLM2's default system prompt survived

    made = H.modelfile(path)
    commands = modelfile_commands(made.text)
    assert commands[0] == ("FROM", "./tiny.gguf")
    template = dict(commands)["TEMPLATE"]
    assert ("PARAMETER", 'stop "<|im_end|>"' if shape == "chatml" else 'stop "<end_of_turn>"') in commands
    for conversation in CONVERSATIONS:
        expected = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        if adds_bos and tok.bos_token and expected.startswith(tok.bos_token) and "bos_token" in jinja:
            expected = expected[len(tok.bos_token) :]  # llama.cpp (and so Ollama) adds the BOS itself
        assert H.go_render(template, H.ollama_values(conversation)) == expected
    if shape == "chatml":  # no system prompt given: the template's own default opens the conversation
        assert H.go_render(template, H.ollama_values(CONVERSATIONS[2])).startswith(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
        )
    # A SYSTEM line reaches the model as a system message would (Ollama puts it first).
    system = H.modelfile(path, system="Traduce al inglés.")
    assert ("SYSTEM", "Traduce al inglés.") in modelfile_commands(system.text)
    with_system = [{"role": "system", "content": "Traduce al inglés."}, *CONVERSATIONS[2]]
    assert H.go_render(
        template, H.ollama_values(CONVERSATIONS[2], system="Traduce al inglés.")
    ) == tok.apply_chat_template(with_system, tokenize=False, add_generation_prompt=True).removeprefix(
        tok.bos_token if adds_bos and "bos_token" in jinja else ""
    )


def test_other_chat_templates_get_no_template_and_say_why():
    llama3 = (
        "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] "
        "+ '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
        "<|end_header_id|>\n\n' }}{% endif %}"
    )
    made = H.ollama_template(llama3)
    assert made.template is None and "ChatML" in made.reason and "Gemma" in made.reason
    # ChatML-looking, but rendered differently (no newline after the role): refused after the check, not guessed.
    odd = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    made = H.ollama_template(odd)
    assert made.template is None and made.stops == ("<|im_end|>",) and "differently" in made.reason
    assert H.ollama_template(None).template is None


@pytest.mark.parametrize(
    "template, values, expected",
    [
        ("a  {{- 1 -}}  b\n{{- 2 }}", {}, "a1b2"),  # trim markers eat every space and line break next to them
        (
            "{{ range $i, $m := .M }}{{ $i }}={{ $m.X }};{{ else }}none{{ end }}",
            {"M": [{"X": "p"}, {"X": "q"}]},
            "0=p;1=q;",
        ),
        ("{{ range .M }}x{{ else }}none{{ end }}", {"M": []}, "none"),
        ('{{ if eq .R "a" }}A{{ else if eq .R "b" "c" }}BC{{ else }}?{{ end }}', {"R": "c"}, "BC"),
        ("{{ if and .A (index .L 5) }}y{{ else }}n{{ end }}", {"A": "", "L": []}, "n"),  # and stops at the first empty
        (
            "{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}",
            {"L": [2, 3]},
            "3",
        ),  # = assigns the outer variable
        (
            "{{ len (slice .L 1) }} {{ (index .M 1).R }} {{ not .E }}",
            {"L": [1, 2, 3], "M": [{}, {"R": "r"}], "E": ""},
            "2 r true",
        ),
        ('{{ "a\\nb" }}|{{ $.T }}', {"T": "t"}, "a\nb|t"),
    ],
)
def test_go_template_subset_follows_go_semantics(template, values, expected):
    assert H.go_render(template, values) == expected


def test_ollama_values_are_what_ollama_passes_a_template():
    values = H.ollama_values([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], system="s")
    assert values["Messages"] == [{"Role": "system", "Content": "s"}, {"Role": "user", "Content": "a\n\nb"}]
    assert values["System"] == "s"
    with pytest.raises(H.GoTemplateError):
        H.go_render("{{ with .X }}{{ end }}", {"X": 1})


def _recorded_project(folder: Path) -> ProjectState:
    """A project record with every measurement a project keeps: bits and tokens per byte of three models
    (Evaluate page / Project.evaluate), fine-tuning, and chrF of the translators (tweety eval --translation)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "en.txt").write_text("In the beginning.\n")
    (folder / "es.txt").write_text("En el principio.\n")
    (folder / "held.txt").write_text("Y dijo Dios.\n")
    state = ProjectState(
        source_model=DEFAULT_MODEL,
        vocabulary="replace",
        inputs=Inputs(
            target_text=str(folder / "es.txt"),
            heldout_text=str(folder / "held.txt"),
            language_code="es",
            language_name="Spanish",
            resources=(Resource(PARALLEL, (str(folder / "en.txt"), str(folder / "es.txt"))),),
        ),
        inputs_sha256={"es.txt": "a" * 64, "en.txt": "b" * 64, "held.txt": "c" * 64},
        settings={"init": {"method": "transtok"}, "finetune": {"stage": "embeddings", "steps": 300}},
        stages={
            "evaluate": StageRecord(
                9.5,
                ".",
                {
                    "source model": {"bits_per_byte": 2.0241, "tokens_per_byte": 0.3781, "token_ppl": 9.0},
                    "adapted model": {"bits_per_byte": 2.1294, "tokens_per_byte": 0.2412, "token_ppl": 9.0},
                    "fine-tuned model": {"bits_per_byte": 1.8433, "tokens_per_byte": 0.2412, "token_ppl": 9.0},
                },
            ),
            "finetune": StageRecord(300.0, "finetuned", {"stage": "embeddings", "steps": 300}),
            "translation": StageRecord(
                60.0,
                ".",
                {
                    "direction": "en->es",
                    "pairs": 100,
                    "best": "memory + lexicon",
                    "scores": {
                        "copy": {"chrf": 18.1},
                        "exported model": {"chrf": 6.4},
                        "memory + lexicon": {"chrf": 43.1},
                    },
                },
            ),
        },
    )
    state.save(folder)
    return state


def test_model_card_loads_back_with_the_recorded_measurements(tmp_path):
    from huggingface_hub import ModelCard

    state = _recorded_project(tmp_path / "spanish")
    path = H.write_model_card(
        tmp_path / "out",
        H.card_facts(state, name="spanish", gguf="spanish.gguf", ollama="ollama create spanish -f Modelfile"),
    )
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["language"] == ["es"] and data["license"] == "apache-2.0"
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["pipeline_tag"] == "text-generation" and "tweety-studio" in data["tags"]
    assert data["datasets"] == ["en.txt", "es.txt", "held.txt"]
    assert data["inputs_sha256"] == state.inputs_sha256
    # model-index: what the metadata says is what project.json recorded, value for value.
    front = yaml.safe_load(path.read_text(encoding="utf-8").split("---")[1])
    assert front["model-index"][0]["name"] == "spanish"
    got = {
        (r.metric_name.split(", ", 1)[1].removesuffix(" (this model)"), r.metric_type): r.metric_value
        for r in card.data.eval_results
    }
    recorded = {
        (model, kind): round(values[kind], 4)
        for model, values in state.stages["evaluate"].summary.items()
        for kind in ("bits_per_byte", "tokens_per_byte")
    }
    recorded |= {(name, "chrf"): score["chrf"] for name, score in state.stages["translation"].summary["scores"].items()}
    assert got == recorded
    assert [r.task_type for r in card.data.eval_results].count("translation") == 3
    assert "fine-tuned model (this model)" in card.text and "embeddings, 300 steps" in card.text
    assert "## Limits" in card.text and "ollama create spanish -f Modelfile" in card.text
    assert "`" + "a" * 64 + "`" in card.text


def test_gemma_card_carries_its_terms(tmp_path, monkeypatch):
    from core import models

    monkeypatch.setattr(
        models,
        "model_card",
        lambda spec: models.ModelCard(
            spec=str(spec),
            name="gemma-3-270m",
            family="Gemma 3",
            parameters=1,
            vocab_size=1,
            file_bytes=1,
            licence=models.licence_of("gemma"),
        ),
    )
    facts = H.card_facts(ProjectState(source_model="/models/gemma-3-270m.gguf"), name="g")
    card = H.model_card(facts)
    assert card.data.license == "gemma" and card.data.base_model == "google/gemma-3-270m"
    assert "Gemma Terms of Use" in card.text and card.data.eval_results is None


def test_project_model_folders_get_cards_but_a_users_readme_stays(target_tokenizer, tmp_path):
    from core.project import Project

    project = Project.create(tmp_path / "proj")
    _model_folder("chatml", target_tokenizer, project.model_dir)
    project.state.stages["init"] = StageRecord(0.1, "model", {"method": "transtok"})
    project.save()
    project.write_model_cards()
    card = (project.model_dir / "README.md").read_text(encoding="utf-8")
    assert H.CARD_MARKER in card and "before fine-tuning" in card
    (project.model_dir / "README.md").write_text("my notes\n")
    project.write_model_cards()  # a user's README.md is never replaced (a warning is logged)
    assert (project.model_dir / "README.md").read_text() == "my notes\n"


def test_lmstudio_layout_and_ollama_beside_it_never_replace_a_users_files(target_tokenizer, tmp_path):
    from core.project import Project

    project = Project.create(tmp_path / "proj")
    _model_folder("chatml", target_tokenizer, project.model_dir)
    project.state.stages["init"] = StageRecord(0.1, "model", {})
    project.save()
    lms = tmp_path / "lmstudio-models"
    result = project.export(ExportSettings(type="f32"), handoff=H.HandOff(ollama=True, lmstudio=lms))
    folder = lms / "tweety-studio" / "proj"
    assert result.path == folder / "proj-f32.gguf" and result.path.is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "README.md", "proj-f32.gguf"]
    assert result.handoff.ollama_command == f"ollama create proj-f32 -f {folder / 'Modelfile'}"
    assert project.state.stages["export"].summary["modelfile"] == str(folder / "Modelfile")

    # Exporting again replaces Tweety Studio's own Modelfile and card (with --force for the GGUF) …
    project.export(ExportSettings(type="f32", overwrite=True), handoff=H.HandOff(ollama=True, lmstudio=lms))
    # … but never the user's: refused before a byte is written, every file as it was.
    (folder / "Modelfile").write_text("FROM ./mine.gguf\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(TweetyError, match="never overwrites"):
        project.export(
            ExportSettings(type="f32", overwrite=False), "other.gguf", handoff=H.HandOff(ollama=True, lmstudio=lms)
        )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not (folder / "other.gguf").exists()
    with pytest.raises(TweetyError, match="never overwrites"):
        H.check_destination(folder / "proj-f32.gguf", H.HandOff(ollama=True), overwrite=False)
    H.check_destination(folder / "proj-f32.gguf", H.HandOff(ollama=True), overwrite=True)  # --force
    assert (
        H.lmstudio_path("~/m", "My model/v2", "x.gguf")
        == Path.home() / "m" / "tweety-studio" / "My-model-v2" / "x.gguf"
    )


def test_cli_export_for_lmstudio_with_ollama(target_tokenizer, tmp_path, capsys):
    from core.cli import main

    model = _model_folder("gemma", target_tokenizer, tmp_path / "tiny")
    lms = tmp_path / "lms"
    assert (
        main(
            ["export", "--model", str(model), "--lmstudio", str(lms), "--ollama", "--type", "f32", "--out", "tiny.gguf"]
        )
        == 0
    )
    out = capsys.readouterr().out
    folder = lms / "tweety-studio" / "tiny"
    assert (folder / "tiny.gguf").is_file() and (folder / "README.md").is_file()
    assert f"ollama create tiny -f {folder / 'Modelfile'}" in out and "tweety-studio/tiny" in out
    assert 'TEMPLATE """' in (folder / "Modelfile").read_text()
    # A README.md of the user's stays; the card goes beside it under the file's name (a source checkout's README).
    (folder / "README.md").write_text("mine\n")
    assert main(["export", "--model", str(model), "--out", str(folder / "again.gguf")]) == 0
    assert "written as again.README.md" in capsys.readouterr().err
    assert (folder / "README.md").read_text() == "mine\n" and H.CARD_MARKER in (folder / "again.README.md").read_text()
    (folder / "again.README.md").write_text("mine too\n")  # … and that one is the user's too: refused
    assert main(["export", "--model", str(model), "--out", str(folder / "again.gguf"), "--type", "q8_0"]) == 2
    assert "never overwrites" in capsys.readouterr().err


def test_export_page_writes_the_modelfile_and_exports_for_lmstudio(qtbot, target_tokenizer, tmp_path, monkeypatch):
    from PySide6.QtCore import Qt, QThreadPool
    from PySide6.QtWidgets import QFileDialog, QPushButton

    from app.pages.export import ExportPage
    from app.workers import Job
    from core.project import Project

    project = Project.create(tmp_path / "proj")
    _model_folder("chatml", target_tokenizer, project.model_dir)
    project.state.stages["init"] = StageRecord(0.1, "model", {})
    project.save()

    class Ctx:  # the window's part a page may use (app.context.Context), running jobs in a thread pool as it does
        def __init__(self):
            self.project, self.busy, self.pool, self.questions = project, False, QThreadPool(), []

        def run_job(self, fn, on_done, *, name, on_error=None, on_end=None):
            job = Job(fn, name)
            job.signals.finished.connect(on_done)
            job.signals.failed.connect(self.show_warning)
            self.job = job
            return job.start(self.pool)

        def confirm(self, question, details=""):
            self.questions.append(question)
            return True

        def show_warning(self, message):
            raise AssertionError(message)

        def log(self, message):
            pass

        def stage_done(self):
            pass

    ctx = Ctx()
    page = ExportPage(ctx)
    qtbot.addWidget(page)
    page.project_changed()
    page.type.setCurrentIndex(page.type.findData("f32"))
    page.ollama.setChecked(True)
    with qtbot.waitSignal(page.exported, timeout=60_000) as written:
        page.go()
    gguf = project.export_dir / "proj-f32.gguf"
    assert written.args == [str(gguf)] and (gguf.parent / "Modelfile").is_file()
    assert not page.command.isHidden()
    assert page.command.text() == f"ollama create proj-f32 -f {gguf.parent / 'Modelfile'}"
    assert page.command.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse

    lms = tmp_path / "lms"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **kw: str(lms))
    page.ollama.setChecked(False)
    button = next(b for b in page.findChildren(QPushButton) if b.text() == "Export for LM Studio…")
    with qtbot.waitSignal(page.exported, timeout=60_000) as written:
        button.click()
    placed = lms / "tweety-studio" / "proj" / "proj-f32.gguf"
    assert written.args == [str(placed)] and (placed.parent / "README.md").is_file()
    assert not (placed.parent / "Modelfile").exists() and page.command.isHidden()
    assert str(placed) in page.result.text() and ctx.questions == []


def test_windows_workflow_builds_what_make_package_builds():
    """What can be checked on Linux: the workflow parses, builds with the Makefile's PyInstaller spec, checks the bundle
    with --self-test and runs Inno Setup on the .iss; the .iss takes the folder the spec's COLLECT makes."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "windows.yml").read_text(encoding="utf-8"))
    steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    runs = "\n".join(steps)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    spec = re.search(r"pyinstaller .*?(packaging/\S+\.spec)", makefile, re.S).group(1)
    assert spec.replace("/", "\\") in runs or spec in runs
    assert "torch==2.13.0" in runs and "download.pytorch.org/whl/cpu" in runs and "--self-test" in runs
    assert "iscc" in runs.lower() and "tweety-studio.iss" in runs
    assert "3.11" in json.dumps(workflow)
    # The spec's COLLECT names the folder (dist/<name>) and the two programs; the .iss installs that folder.
    spec_text = (ROOT / spec).read_text(encoding="utf-8")
    folder = re.search(r'COLLECT\(.*name="([^"]+)"\)', spec_text, re.S).group(1)
    programs = set(re.findall(r'EXE\(.*?name="([^"]+)"', spec_text, re.S))
    assert programs == {"tweety-studio", "tweety"}
    iss = (ROOT / "packaging" / "windows" / "tweety-studio.iss").read_text(encoding="utf-8")
    iss_dir = ROOT / "packaging" / "windows"
    sources = re.findall(r'Source: "([^"]+)"', iss)
    assert sources == [f"..\\..\\dist\\{folder}\\*"]
    assert {Path(p).name for p in re.findall(r'\{app\}\\([^"]+\.exe)', iss)} <= {f"{p}.exe" for p in programs}
    for name in ("SetupIconFile", "LicenseFile"):
        for value in re.findall(rf"^{name}=(.+)$", iss, re.M):
            assert (iss_dir / value.replace("\\", "/")).resolve().is_file(), value
    assert "--distpath dist" in runs or "--distpath=dist" in runs
