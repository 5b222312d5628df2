"""Source model families: each supported architecture, built by transformers as a tiny random-weight model, exports to
a GGUF that llama.cpp runs with transformers' logits, tokenization and greedy completions; the streamed and in-memory
initialisations keep each family's embedding and head right; anything unsupported is refused at once."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import demo_lines

from core import models, runtime
from core.errors import TweetyError
from core.export import ARCHITECTURES, ExportSettings, export_gguf
from core.init import InitSettings, initialise, initialise_folder, write_tokenizer
from core.mapping import Mapping, Origin

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
GEMMA = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=4)  # a window shorter than the prompt
# Each family's own features, set so that getting them wrong moves the logits: Llama 3's RoPE scaling over a short
# original context (all three frequency bands), untied heads, Qwen3's head_dim ≠ hidden/heads, Gemma's soft-capping
# values small enough to bite, its sliding window shorter than the prompt and a local RoPE base of its own.
FAMILIES = {
    "llama": dict(
        tie_word_embeddings=False,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
    ),
    "mistral": dict(tie_word_embeddings=False),
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": dict(tie_word_embeddings=False, head_dim=32),
    "gemma2": dict(**GEMMA, attn_logit_softcapping=5.0, final_logit_softcapping=2.0),
    "gemma3_text": dict(
        **GEMMA,
        final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": dict(rope_type="default", rope_theta=100000.0),
            "sliding_attention": dict(rope_type="default", rope_theta=1000.0),
        },
    ),
}


@pytest.fixture(scope="module")
def tokenizer(target_tokenizer):
    """A small real tokenizer: SentencePiece BPE, 800 pieces, trained on Spanish verses (tests/conftest.py)."""
    return target_tokenizer


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return demo_lines("bible.train.es.gz", 4)


def tiny_model(model_type: str, tokenizer, seed: int = 0):
    """A random-weight model of `model_type` (a few MB). Every weight, norms included, gets noise of 0.1 so that
    nothing sits at an initial value that would hide a wrong conversion (a Gemma norm at 0, a bias at 0)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY,
        **FAMILIES[model_type],
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def save(model, tokenizer, folder):
    model.save_pretrained(folder)
    write_tokenizer(tokenizer, folder)
    return folder


def load_hf(folder):
    from transformers import AutoModelForCausalLM

    # eager: the reference attention (soft-capping and sliding windows are applied exactly)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tokenizer, module_tmp):
    """(model type, transformers model reloaded from its folder, F32 GGUF path)."""
    model_type = request.param
    tmp = module_tmp(model_type)
    folder = save(tiny_model(model_type, tokenizer), tokenizer, tmp / "model")
    gguf_file = export_gguf(folder, tmp / "model.gguf", ExportSettings(type="f32")).path
    return model_type, load_hf(folder), gguf_file


def prompt_ids(tokenizer, sentences) -> list[int]:
    """BOS and 15 tokens of Spanish: longer than Gemma's 4-token window."""
    ids = tokenizer(sentences[0], add_special_tokens=False)["input_ids"][:15]
    assert len(ids) == 15
    return [tokenizer.bos_token_id] + ids


class Fp16TableGelu(torch.nn.Module):
    """GELU (tanh form) as llama.cpp computes it on the CPU: ggml looks it up in a table indexed by the input rounded
    to float16 and holding float16 results (GGML_GELU_FP16), exact past ±10. That rounding alone moves a Gemma's
    logits by ~1e-3; with it reproduced here, what is left is the conversion's own error."""

    def forward(self, x):
        y = torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()
        return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))


def llama_cpp_model(path):
    return runtime.load(path, runtime.RuntimeSettings(n_ctx=64, exact=True, threads=1))


def test_every_family_has_an_export_table():
    assert {f.gguf_arch for f in models.FAMILIES} <= set(ARCHITECTURES)
    assert {f.model_type for f in models.FAMILIES} == set(FAMILIES)


def test_f32_logits_match_transformers(exported, tokenizer, sentences):
    model_type, model, path = exported
    ids = prompt_ids(tokenizer, sentences)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp_model(path)
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    assert got.shape == expected.shape
    assert expected.std() > 0.1  # the logits have spread: a wrong conversion would show
    error = np.abs(got - expected).max()
    if ARCHITECTURES[models.family({"model_type": model_type}).gguf_arch].activation == "silu":
        assert error <= 1e-4, model_type
        return
    # GELU families: llama.cpp's float16 GELU table costs ~1e-3 (measured 1.1e-3 gemma2, 9.5e-4 gemma3); with that
    # rounding reproduced in transformers the conversion itself agrees to 1e-4 (measured 1.4e-5, 2.2e-5).
    assert error <= 3e-3, model_type
    reference = load_hf(path.parent / "model")
    for layer in reference.model.layers:
        layer.mlp.act_fn = Fp16TableGelu()
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(got - expected).max() <= 1e-4, model_type


def test_f16_logits_close_and_same_greedy_tokens(exported, tokenizer, sentences, tmp_path):
    """The type policy holds for every architecture (norms, Gemma's shifted ones included, stay F32)."""
    model_type, model, path = exported
    ids = prompt_ids(tokenizer, sentences)
    f16 = export_gguf(path.parent / "model", tmp_path / "model-f16.gguf", ExportSettings(type="f16")).path
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp_model(f16)
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    assert np.abs(got - expected).max() <= 1e-2, model_type  # measured 2.6e-3 … 4.0e-3
    assert (got.argmax(-1) == expected.argmax(-1)).all(), model_type


def test_llama_cpp_tokenizes_like_transformers(exported, tokenizer, sentences):
    _, _, path = exported
    llm = llama_cpp_model(path)
    for line in sentences:
        assert (
            llm.tokenize(line.encode(), add_bos=False, special=False)
            == tokenizer(line, add_special_tokens=False)["input_ids"]
        )


def test_greedy_completion_matches_transformers(exported, tokenizer, sentences):
    model_type, model, path = exported
    ids = prompt_ids(tokenizer, sentences)
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    expected = expected[0, len(ids) :].tolist()
    assert len(expected) == 8
    got = []
    for token in llama_cpp_model(path).generate(ids, top_k=1, temp=0.0):
        if len(got) == len(expected):
            break
        got.append(token)
    assert got == expected, model_type


def test_gguf_keys_of_each_family(exported):
    import gguf

    model_type, _, path = exported
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    assert arch == models.family({"model_type": model_type}).gguf_arch
    fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith(arch + ".")}
    names = {t.name for t in reader.tensors}
    tied = FAMILIES[model_type].get("tie_word_embeddings", model_type.startswith("gemma"))
    assert ("output.weight" in names) is not tied
    if model_type == "llama":
        assert "rope_freqs.weight" in names
    if model_type == "qwen2":
        assert "blk.0.attn_q.bias" in names
    if model_type == "qwen3":
        assert "blk.1.attn_k_norm.weight" in names and fields[f"{arch}.attention.key_length"] == 32
    if model_type.startswith("gemma"):
        assert fields[f"{arch}.attention.sliding_window"] == 4
        assert fields[f"{arch}.attention.sliding_window_pattern"] == [True, False]
        assert "blk.0.post_ffw_norm.weight" in names
    if model_type == "gemma2":
        assert fields[f"{arch}.attn_logit_softcapping"] == 5.0 and fields[f"{arch}.final_logit_softcapping"] == 2.0
    if model_type == "gemma3_text":
        assert fields[f"{arch}.rope.freq_base"] == 100000.0 and fields[f"{arch}.rope.freq_base_swa"] == 1000.0


# --- initialisation: the vocabulary tensors of each family, tied and untied ------------------------------------------


def _random_mapping(n_target: int, n_source: int, seed: int = 0) -> Mapping:
    """Each target token a weighted mix of three source tokens."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_target), 3)
    cols = rng.integers(0, n_source, size=rows.size)
    weights = rng.random(rows.size).astype(np.float32)
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=(n_target, n_source))
    matrix = sp.csr_matrix(sp.diags(1 / np.asarray(matrix.sum(axis=1)).ravel()) @ matrix)
    return Mapping(matrix, np.full(n_target, Origin.ALIGNMENT, dtype=np.int8))


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gemma3_text"])
def test_streamed_initialisation_gives_an_untied_head_its_own_rows(model_type, tokenizer, tmp_path):
    from safetensors.torch import load_file

    source = save(tiny_model(model_type, tokenizer), tokenizer, tmp_path / "source")
    mapping = _random_mapping(len(tokenizer), len(tokenizer))
    out = initialise_folder(source, mapping, tokenizer, tmp_path / "adapted")
    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    m = torch.from_numpy(mapping.matrix.toarray())
    embed = "model.embed_tokens.weight"
    assert torch.allclose(after[embed], m @ before[embed], atol=1e-6)
    if models.tied_embeddings(json.loads((source / "config.json").read_text())):
        assert "lm_head.weight" not in after or torch.equal(after["lm_head.weight"], after[embed])
    else:
        assert torch.allclose(after["lm_head.weight"], m @ before["lm_head.weight"], atol=1e-6)
        assert not torch.allclose(after["lm_head.weight"], after[embed])
    assert set(after) == set(before)
    for name in set(before) - {embed, "lm_head.weight"}:
        assert torch.equal(after[name], before[name]), name


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "gemma3_text"])
def test_identity_initialisation_keeps_every_familys_logits(model_type, tokenizer, sentences, tmp_path):
    """Target vocabulary = source vocabulary, mapping = identity: in memory and streamed, the adapted model computes
    what the source computed (Gemma's scaled embeddings and the untied Llama head included)."""
    model = tiny_model(model_type, tokenizer)
    source = save(model, tokenizer, tmp_path / "source")
    n = len(tokenizer)
    identity = Mapping(sp.identity(n, dtype=np.float32, format="csr"), np.full(n, Origin.IDENTICAL, dtype=np.int8))
    ids = torch.tensor([prompt_ids(tokenizer, sentences)])
    with torch.no_grad():
        expected = model(ids).logits
        in_memory = initialise(tiny_model(model_type, tokenizer), identity, InitSettings())(ids).logits
        streamed = load_hf(initialise_folder(source, identity, tokenizer, tmp_path / "adapted"))(ids).logits
    assert torch.allclose(in_memory, expected, atol=1e-5)
    assert torch.allclose(streamed, expected, atol=1e-5)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_hydra_of_every_family_reproduces_its_body(model_type, tokenizer, sentences):
    """A Hydra reading and writing with the source's own tables computes what the model computes: the Hydra feeds
    the body itself, so it must apply Gemma's embedding scale and soft-capped logits as the model's own layers do."""
    from core import hydra as H

    model = tiny_model(model_type, tokenizer)
    ids = prompt_ids(tokenizer, sentences)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
    got = H.Hydra(model, "en", tokenizer).logits([H.Segment("en", tuple(ids))], "en")
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_gguf_source_converts_back_to_the_same_model(exported, sentences, tokenizer, tmp_path, monkeypatch):
    """A GGUF as a source model: converted one tensor at a time (core/convert.py) into a folder that computes what
    the model it was exported from computes (Llama's Q/K permutation undone, Gemma's norm offset taken back)."""
    model_type, reference, gguf_file = exported
    monkeypatch.setenv("TWEETY_CACHE", str(tmp_path))
    older = tmp_path / "models" / f"{gguf_file.stem}-0123456789abcdef"  # an older converter's folder of this file
    older.mkdir(parents=True)
    converted = models.resolve(gguf_file)
    assert not older.exists()
    stored = models.safetensors_headers(models.weight_files(converted))
    assert {t.dtype for t in stored.values()} == {"F32"}  # an F32 GGUF stays F32
    ids = torch.tensor([prompt_ids(tokenizer, sentences)])
    with torch.no_grad():
        expected, got = reference(ids).logits, load_hf(converted)(ids).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    # The cache is keyed by content: the same file elsewhere (a reinstall, another clone) reuses the folder.
    copy = tmp_path / "elsewhere" / gguf_file.name
    copy.parent.mkdir()
    shutil.copy(gguf_file, copy)
    assert models.resolve(copy) == converted


@pytest.mark.parametrize("dim,theta,context", [(128, 500000.0, 8192.0), (16, 10000.0, 32.0)])
def test_llama3_rope_scaling_is_recovered_from_rope_freqs(dim, theta, context, tmp_path):
    """A GGUF keeps Llama 3's RoPE scaling only as divisors; the parameters read back give the same divisors
    (Llama 3.1/3.2's own values, and a band of one pair, where Meta's high factor is assumed)."""
    from core.convert import llama3_rope_factors, llama3_rope_parameters

    factors = llama3_rope_factors(dim, theta, 8.0, 1.0, 4.0, context)
    rope = llama3_rope_parameters(factors, dim, theta, tmp_path)
    assert llama3_rope_factors(
        dim,
        theta,
        rope["factor"],
        rope["low_freq_factor"],
        rope["high_freq_factor"],
        rope["original_max_position_embeddings"],
    ) == pytest.approx(factors, rel=1e-6)
    assert rope["factor"] == 8.0
    with pytest.raises(TweetyError, match="not Llama 3's scaling"):
        llama3_rope_parameters([1.0, 3.0, 1.5, 8.0] * (dim // 8), dim, theta, tmp_path)


# --- refusal: unsupported architectures, before any work ------------------------------------------------------------


def test_unsupported_config_is_refused_at_once(tmp_path):
    folder = tmp_path / "gpt2-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    start = time.monotonic()
    with pytest.raises(TweetyError, match="'gpt2' is not supported") as refused:
        models.resolve(folder)
    assert time.monotonic() - start < 2
    assert "Gemma 3" in str(refused.value) and "qwen2" in str(refused.value)  # the message lists what is supported
    with pytest.raises(TweetyError, match="'gpt2' is not supported"):
        export_gguf(folder, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_unsupported_gguf_is_refused_before_dequantising(tmp_path):
    import gguf

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_block_count(2)
    writer.add_token_list([f"t{i}" for i in range(50_000)])  # a vocabulary after the architecture, as usual
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    start = time.monotonic()
    with pytest.raises(TweetyError, match="architecture 'gpt2' is not supported") as refused:
        models.resolve(path)
    assert time.monotonic() - start < 2
    assert "Llama" in str(refused.value)
    assert models.gguf_architecture(models.default_gguf()) == "llama"


def test_damaged_gguf_is_refused(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 5)
    with pytest.raises(TweetyError, match="not a readable GGUF"):
        models.resolve(path)


def test_multimodal_gemma3_is_refused_with_a_hint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {}}))
    with pytest.raises(TweetyError, match="gemma3_text"):
        models.resolve(tmp_path)
