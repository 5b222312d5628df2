"""Initialisation rows are exact weighted averages; bits per byte equals a hand computation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from core.evaluate import bits_per_byte, document_start_id
from core.init import InitSettings, initialise, mapping_for_method, save_adapted
from core.mapping import Origin, build_mapping
from core.resources import DictionaryEntry


@pytest.fixture(scope="module")
def dictionary_mapping(source_tokenizer, target_tokenizer):
    entries = [
        DictionaryEntry("God", "Dios"),
        DictionaryEntry("earth", "tierra"),
        DictionaryEntry("land", "tierra"),
        DictionaryEntry("waters", "aguas"),
    ]
    return build_mapping(source_tokenizer, target_tokenizer, dictionary=entries)


def test_row_equals_weighted_average_of_source_rows(source, target_tokenizer, dictionary_mapping):
    model, _ = source
    E = model.get_input_embeddings().weight.detach().numpy().astype(np.float64)
    adapted = initialise(copy.deepcopy(model), dictionary_mapping)
    new = adapted.get_input_embeddings().weight.detach().numpy()
    assert new.shape == (len(target_tokenizer), E.shape[1])
    m = dictionary_mapping.matrix
    for piece in ("▁tierra", "▁Dios", "<|im_end|>", "<0x0A>", "a"):
        t = target_tokenizer.convert_tokens_to_ids(piece)
        row = m[t]
        expected = (row.data[:, None] * E[row.indices]).sum(axis=0)
        np.testing.assert_allclose(new[t], expected, rtol=1e-5, atol=1e-6)
    unk = target_tokenizer.convert_tokens_to_ids("<unk>")
    assert dictionary_mapping.origin[unk] == Origin.MEAN
    np.testing.assert_allclose(new[unk], E.mean(axis=0), rtol=1e-4, atol=1e-6)
    assert adapted.get_output_embeddings().weight is adapted.get_input_embeddings().weight  # tied stays tied
    assert adapted.config.vocab_size == len(target_tokenizer)


def test_untied_head_is_mapped_too(source_tokenizer, target_tokenizer, dictionary_mapping):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(source_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    H = model.get_output_embeddings().weight.detach().numpy().astype(np.float64)
    adapted = initialise(model, dictionary_mapping)
    head = adapted.get_output_embeddings().weight.detach().numpy()
    assert head.shape[0] == len(target_tokenizer)
    assert adapted.get_output_embeddings().weight is not adapted.get_input_embeddings().weight
    t = target_tokenizer.convert_tokens_to_ids("▁tierra")
    row = dictionary_mapping.matrix[t]
    np.testing.assert_allclose(head[t], (row.data[:, None] * H[row.indices]).sum(0), rtol=1e-5, atol=1e-6)


def test_baselines(source, source_tokenizer, target_tokenizer, dictionary_mapping):
    model, _ = source
    E = model.get_input_embeddings().weight.detach()
    special = target_tokenizer.convert_tokens_to_ids("<|im_end|>")
    word = target_tokenizer.convert_tokens_to_ids("▁tierra")
    rows = {}
    for method in ("mean", "random", "fvt"):
        m = mapping_for_method(method, dictionary_mapping, source_tokenizer, target_tokenizer)
        adapted = initialise(copy.deepcopy(model), m, InitSettings(method=method))
        rows[method] = adapted.get_input_embeddings().weight.detach()
        torch.testing.assert_close(rows[method][special], E[2])  # specials 1:1 in every method
    torch.testing.assert_close(rows["mean"][word], E.mean(0))
    torch.testing.assert_close(rows["mean"][word + 1], E.mean(0))
    assert not torch.allclose(rows["random"][word], rows["random"][word + 1])
    assert abs(float(rows["random"][word:].std()) - float(E.std())) < 0.2 * float(E.std())
    fvt_ids = source_tokenizer(" tierra", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(rows["fvt"][word], E[fvt_ids].mean(0))


def _hand_bpb(model, ids: list[int], start: int, window: int, n_bytes: int) -> float:
    """Token by token: the probability of each token given everything before it in its window."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(ids), window - 1):
            chunk = [start] + ids[i : i + window - 1]
            for k in range(1, len(chunk)):
                logits = model(input_ids=torch.tensor([chunk[:k]])).logits[0, -1].double()
                total -= float(torch.log_softmax(logits, -1)[chunk[k]])
    return total / math.log(2) / n_bytes


def test_bits_per_byte_matches_hand_computation(target_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(target_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).eval()
    text = "En el principio creó Dios los cielos y la tierra.\nY la tierra estaba desordenada y vacía ☃."
    ids = target_tokenizer(text, add_special_tokens=False)["input_ids"]
    result = bits_per_byte(model, target_tokenizer, text, window=8, batch_size=3)
    n_bytes = len(text.encode())
    assert result.tokens == len(ids) and result.bytes == n_bytes
    assert result.tokens_per_byte == pytest.approx(len(ids) / n_bytes)
    expected = _hand_bpb(model, ids, document_start_id(target_tokenizer), 8, n_bytes)
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)
    assert result.token_ppl == pytest.approx(math.exp(expected * math.log(2) * n_bytes / len(ids)), rel=1e-5)


def test_saved_model_reloads_with_same_logits(tmp_path, source, target_tokenizer, dictionary_mapping):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, _ = source
    adapted = initialise(copy.deepcopy(model), dictionary_mapping)
    save_adapted(adapted, target_tokenizer, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    x = torch.tensor([tok("Y dijo Dios", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, adapted(x).logits)
    assert again.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert (tmp_path / "m" / "tokenizer.model").exists()
