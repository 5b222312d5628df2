"""Target tokenizer: exact round trip, agreement with SentencePiece, special tokens carried over."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from core.errors import TweetyError
from core.tokenizer import TokenizerSettings, train_tokenizer

TRICKY = [
    "  leading spaces,  double  spaces and trailing ",
    "tab\tand\nnewline\n\n",
    "números 1234 y ¿qué?",
    "emoji ☃ 🐦 and 中文",
    "Ruth 1:16 — «tu pueblo será mi pueblo»",
]


def test_round_trip_is_exact(target_tokenizer):
    for text in TRICKY:
        ids = target_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert target_tokenizer.decode(ids) == text


def test_hf_tokenizer_equals_sentencepiece(target_tokenizer, pairs):
    sp = spm.SentencePieceProcessor(model_file=f"{target_tokenizer.name_or_path}/tokenizer.model")
    lines = pairs[1][:200] + TRICKY
    assert [sp.encode(x) for x in lines] == target_tokenizer(lines, add_special_tokens=False)["input_ids"]


def test_special_tokens_and_chat_template_carried(target_tokenizer, source_tokenizer):
    vocab = target_tokenizer.get_vocab()
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert token in vocab
    assert target_tokenizer.eos_token == source_tokenizer.eos_token == "<|im_end|>"
    chat = target_tokenizer.apply_chat_template(
        [{"role": "user", "content": "¿Quién es?"}], tokenize=False, add_generation_prompt=True
    )
    ids = target_tokenizer(chat, add_special_tokens=False)["input_ids"]
    assert ids.count(vocab["<|im_start|>"]) == 3 and ids.count(vocab["<|im_end|>"]) == 2
    assert target_tokenizer.decode(ids) == chat


def test_fewer_tokens_than_source_on_target_text(target_tokenizer, source_tokenizer, pairs):
    text = "\n".join(pairs[1])
    ours = len(target_tokenizer(text, add_special_tokens=False)["input_ids"])
    theirs = len(source_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert ours < theirs  # 527 learned pieces beat 49k English-centric ones on Spanish


def test_vocabulary_too_small_is_a_clear_error(tmp_path, source_tokenizer, pairs):
    with pytest.raises(TweetyError, match="too small"):
        train_tokenizer(pairs[1], source_tokenizer, tmp_path / "t", TokenizerSettings(vocab_size=100))
    assert not (tmp_path / "t").exists()
