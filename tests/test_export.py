"""GGUF export: llama.cpp reads the file back with the same logits and the same tokenization as transformers."""

from __future__ import annotations

import json
import shutil

import llama_cpp  # installed by `make test` (built from source, see the Makefile)
import numpy as np
import pytest
import torch
from conftest import DEMO, write_lines

from core import runtime
from core.errors import TweetyError
from core.export import ExportSettings, export_gguf
from core.resources import read_lines


@pytest.fixture(scope="module")
def adapted(module_tmp, pairs):
    """The real SmolLM2-135M adapted to Spanish through the whole pipeline (vocab 800, 400 verse pairs)."""
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    tmp = module_tmp("export")
    en, es = write_lines(tmp / "train.en", pairs[0]), write_lines(tmp / "train.es", pairs[1])
    return adapt(
        AdaptSettings(
            target_text=str(es),
            parallel=(str(en), str(es)),
            out=str(tmp / "adapted"),
            language="es",
            tokenizer=TokenizerSettings(vocab_size=800),
        )
    ).model


@pytest.fixture(scope="module")
def hf(adapted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(adapted, dtype=torch.float32).eval(),
        AutoTokenizer.from_pretrained(adapted),
    )


@pytest.fixture(scope="module")
def ggufs(adapted, module_tmp):
    out = module_tmp("gguf")
    return {
        t: export_gguf(adapted, out / f"model-{t}.gguf", ExportSettings(type=t)).path for t in ("f32", "f16", "q8_0")
    }


@pytest.fixture(scope="module")
def text_ids(hf):
    """64 tokens: the model's BOS (`<|im_start|>`, how every chat prompt opens) and held-out Spanish (Ruth).
    Opened this way the float32 noise floor is ~5e-5 (transformers f32 vs f64: 4.6e-5)."""
    tok = hf[1]
    ids = tok(" ".join(read_lines(DEMO / "bible.heldout.es.gz")[:20]), add_special_tokens=False)["input_ids"][:63]
    assert len(ids) == 63
    return [tok.bos_token_id] + ids


def _logits(hf, ggufs, text_ids, kind: str) -> tuple[np.ndarray, np.ndarray]:
    model, _ = hf
    with torch.no_grad():
        expected = model(torch.tensor([text_ids])).logits[0].numpy()
    llm = runtime.load(ggufs[kind], runtime.RuntimeSettings(n_ctx=128, exact=True, threads=2))
    llm.eval(text_ids)
    return expected, np.asarray(llm.scores[: len(text_ids)])


def test_f32_logits_match_transformers(hf, ggufs, text_ids):
    expected, got = _logits(hf, ggufs, text_ids, "f32")
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


def test_f16_logits_close_and_same_greedy_tokens(hf, ggufs, text_ids):
    expected, got = _logits(hf, ggufs, text_ids, "f16")
    assert np.abs(got - expected).max() <= 5e-2
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_q8_0_top1_agreement(hf, ggufs, text_ids):
    expected, got = _logits(hf, ggufs, text_ids, "q8_0")
    # Trans-tokenization can give two tokens the same row (same source evidence), so transformers itself has exact
    # ties and near-ties; llama.cpp agrees when its pick is within q8_0's rounding noise (0.05) of transformers' best.
    picked = expected[np.arange(len(text_ids)), got.argmax(-1)]
    assert (picked >= expected.max(-1) - 0.05).mean() >= 0.95
    assert ggufs["q8_0"].stat().st_size < 0.3 * ggufs["f32"].stat().st_size


def test_llama_cpp_tokenizes_like_transformers(hf, ggufs):
    tok = hf[1]
    llm = llama_cpp.Llama(str(ggufs["f16"]), vocab_only=True, verbose=False)
    lines = read_lines(DEMO / "bible.heldout.es.gz")[:200]
    mismatched = [
        line
        for line in lines
        if llm.tokenize(line.encode(), add_bos=False, special=False) != tok(line, add_special_tokens=False)["input_ids"]
    ]
    assert mismatched == []
    # Special tokens in a chat prompt are single tokens in both.
    prompt = "<|im_start|>user\nHola\n<|im_end|>\n"
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == tok(prompt)["input_ids"]


def test_f32_round_trip_through_transformers(adapted, hf, ggufs):
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(ggufs["f32"].parent, gguf_file=ggufs["f32"].name, dtype=torch.float32)
    original = hf[0].state_dict()
    loaded = back.state_dict()
    assert set(original) == set(loaded)
    for name, tensor in original.items():
        assert torch.equal(tensor, loaded[name]), name


def test_metadata_vocabulary_and_provenance(adapted, ggufs, hf):
    import gguf

    tok = hf[1]
    reader = gguf.GGUFReader(ggufs["q8_0"])

    def value(key):
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("general.languages") == ["es"]
    assert value("tokenizer.ggml.model") == "llama"
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    assert tokens == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert types.count(gguf.TokenType.BYTE) == 256
    assert types[tok.convert_tokens_to_ids("<|im_end|>")] == gguf.TokenType.CONTROL
    assert value("tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert value("tokenizer.ggml.add_space_prefix") is False
    assert value("tokenizer.chat_template") == tok.chat_template
    assert value("llama.block_count") == 30 and value("llama.attention.head_count_kv") == 3
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    tensor_types = {t.name: t.tensor_type for t in reader.tensors}
    assert {tensor_types[n] for n in tensor_types if n.endswith("attn_q.weight")} == {gguf.GGMLQuantizationType.Q8_0}
    assert tensor_types["token_embd.weight"] == gguf.GGMLQuantizationType.F16  # one step more precise (see export)
    project = json.loads((adapted / "project.json").read_text())
    digests = value("tweety.inputs_sha256")
    assert sorted(d.split()[0] for d in digests) == sorted(set(project["inputs_sha256"].values()))
    assert value("tweety.init_method") == "transtok"


def _broken_copy(adapted, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(adapted, folder)
    return folder


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda f: (f / "config.json").write_text(
                (f / "config.json").read_text().replace('"model_type": "llama"', '"model_type": "gpt2"')
            ),
            "gpt2",
        ),
        (lambda f: [(f / name).unlink() for name in ("tokenizer.model", "tokenizer.json")], "tokenizer"),
        (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-1000]), "damaged"),
        (
            lambda f: (f / "config.json").write_text(
                (f / "config.json").read_text().replace('"vocab_size": 800', '"vocab_size": 801')
            ),
            "801",
        ),
    ],
)
def test_bad_model_folder_is_refused_before_writing(adapted, tmp_path, damage, message):
    folder = _broken_copy(adapted, tmp_path)
    damage(folder)
    out = tmp_path / "out.gguf"
    with pytest.raises(TweetyError, match=message):
        export_gguf(folder, out)
    assert list(tmp_path.glob("*.gguf*")) == [] and not list(tmp_path.glob(".out*"))


def test_existing_destination_is_not_overwritten(adapted, tmp_path):
    out = tmp_path / "mine.gguf"
    out.write_text("my file")
    with pytest.raises(TweetyError, match="never overwrites"):
        export_gguf(adapted, out)
    assert out.read_text() == "my file"


def test_greedy_completion_matches_transformers(hf, ggufs, text_ids):
    model, _ = hf
    with torch.no_grad():
        expected = model.generate(torch.tensor([text_ids[:16]]), max_new_tokens=12, do_sample=False)[0, 16:].tolist()
    llm = runtime.load(ggufs["f32"], runtime.RuntimeSettings(n_ctx=128, exact=True, threads=2))
    got = []
    for token in llm.generate(text_ids[:16], top_k=1, temp=0.0):
        if len(got) == len(expected):
            break
        got.append(token)
    assert got == expected


def test_chat_streams_and_cancels(ggufs):
    from core.jobs import CancelToken

    llm = runtime.load(ggufs["q8_0"], runtime.RuntimeSettings(n_ctx=256, threads=2, max_tokens=24))
    # a replaced vocabulary, not fine-tuned: the template's default system prompt; no turn start in a reply
    assert llm.metadata["tweety.vocabulary"] == "replace" and runtime.default_system(llm) is None
    assert runtime.never_in_a_reply(llm) == {llm.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]: -100.0}
    chat = runtime.Chat(llm, runtime.RuntimeSettings(max_tokens=24, temperature=0.0))
    pieces: list[str] = []
    reply = chat.send("Hola, ¿quién eres?", on_text=pieces.append)
    assert reply and "".join(pieces) == reply
    assert [m["role"] for m in chat.history] == ["user", "assistant"]

    cancel = CancelToken()
    streamed: list[str] = []

    def stop_after_two(text: str) -> None:
        streamed.append(text)
        if len(streamed) == 2:
            cancel.cancel()

    cut = chat.send("Cuéntame una historia larga.", on_text=stop_after_two, cancel=cancel)
    assert len(streamed) == 2 and cut == "".join(streamed)


def test_translate_file_keeps_lines_and_is_atomic(ggufs, tmp_path):
    from core.jobs import Cancelled, CancelToken

    llm = runtime.load(ggufs["q8_0"], runtime.RuntimeSettings(n_ctx=256, threads=2))
    src = write_lines(tmp_path / "in.txt", ["In the beginning.", "", "And God said."])
    out = tmp_path / "out.txt"
    assert runtime.translate_file(llm, src, out, "en", "es") == 3
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # empty line kept, trailing newline
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        runtime.translate_file(llm, src, tmp_path / "cancelled.txt", "en", "es", cancel=cancel)
    assert not (tmp_path / "cancelled.txt").exists()
    with pytest.raises(TweetyError, match="never overwrites"):
        runtime.translate_file(llm, src, out, "en", "es")
