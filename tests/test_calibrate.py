"""Frequency calibration (core.calibrate): the adapted model predicts each new token about as often as the target
text uses it, reads held-out text better for it, and only the rows it is given change."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import demo_lines

from core import calibrate, models
from core.evaluate import bits_per_byte
from core.init import InitSettings, initialise, initialise_folder
from core.mapping import fvt_mapping


@pytest.fixture(scope="module")
def fvt_model(source, source_tokenizer, target_tokenizer):
    """SmolLM2 with the 800-token Spanish vocabulary, every row from its spelling (FVT), not calibrated."""
    mapping = fvt_mapping(source_tokenizer, target_tokenizer)
    return initialise(copy.deepcopy(source[0]), mapping, InitSettings(method="fvt")), mapping


def marginal_gap(model, tokenizer, text: str) -> float:
    """KL(the text's token frequencies ‖ the model's mean prediction over the text's positions), in nats."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:1500]
    counts = torch.bincount(torch.tensor(ids), minlength=len(tokenizer)).double() + 0.5
    freq = counts / counts.sum()
    with torch.inference_mode():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1).mean(0)
    return float((freq * (freq / probs).log()).sum())


def test_calibration_matches_the_texts_frequencies_and_reads_held_out_text_better(fvt_model, target_tokenizer):
    text = "\n".join(demo_lines("bible.train.es.gz", 400))
    heldout = "\n".join(demo_lines("bible.train.es.gz", 700)[500:])  # verses the calibration never read
    model = copy.deepcopy(fvt_model[0])
    before = bits_per_byte(model, target_tokenizer, heldout).bits_per_byte
    gap_before = marginal_gap(model, target_tokenizer, text)
    calibrate.calibrate(model, target_tokenizer, text)
    after = bits_per_byte(model, target_tokenizer, heldout).bits_per_byte
    gap_after = marginal_gap(model, target_tokenizer, text)
    assert gap_after < 0.5 * gap_before
    assert after < 0.95 * before, (before, after)


def test_rows_before_first_row_stay_special_tokens_move_together_and_all_along_one_direction(
    fvt_model, target_tokenizer
):
    text = "\n".join(demo_lines("bible.train.es.gz", 400))
    model = copy.deepcopy(fvt_model[0])
    offsets = calibrate.frequency_offsets(model, target_tokenizer, text, first_row=300)
    assert offsets.shape == model.get_input_embeddings().weight.shape
    assert not offsets[:300].any()  # an extension's source tokens keep their rows exactly
    offsets = calibrate.frequency_offsets(model, target_tokenizer, text)
    special = sorted(target_tokenizer.added_tokens_decoder)  # chat markers, end of turn: never in the text
    # ... all moved by one shift (the average of the tokens the model predicted).
    shifts = offsets[special] @ offsets[400] / (offsets[400] @ offsets[400])
    assert torch.allclose(shifts, shifts[0].expand_as(shifts))
    moved = offsets[300:]
    assert moved.abs().sum(1).gt(0).all()
    # One shared direction (the mean last hidden state), one coefficient per token: the offsets have rank 1.
    singular = torch.linalg.svdvals(moved.double())
    assert singular[1] < 1e-6 * singular[0]


def test_initialised_folder_differs_from_the_uncalibrated_one_in_the_embeddings_only(
    tmp_path, fvt_model, target_tokenizer
):
    from safetensors.torch import load_file

    source_folder = models.resolve(models.DEFAULT_MODEL)
    text = "\n".join(demo_lines("bible.train.es.gz", 400))
    mapping = fvt_model[1]
    plain = initialise_folder(source_folder, mapping, target_tokenizer, tmp_path / "plain", InitSettings("fvt"))
    tuned = initialise_folder(
        source_folder,
        mapping,
        target_tokenizer,
        tmp_path / "calibrated",
        InitSettings("fvt", calibration=1.0),
        text=text,
    )
    a, b = load_file(plain / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert a.keys() == b.keys()
    changed = {name for name in a if not torch.equal(a[name], b[name])}
    assert changed == {"model.embed_tokens.weight"}
    # The offsets written are the ones computed from the uncalibrated model.
    model = models.load_model(plain)[0]
    stored = a["model.embed_tokens.weight"]  # bfloat16, as the source stores it: the calibrated rows are too
    expected = (stored.float() + calibrate.frequency_offsets(model, target_tokenizer, text)).to(stored.dtype)
    torch.testing.assert_close(b["model.embed_tokens.weight"], expected)


def test_the_baselines_stay_as_published_unless_asked():
    assert InitSettings().calibration_share == calibrate.SHARE
    assert InitSettings(method="fvt").calibration_share == 0
    assert InitSettings(method="fvt", calibration=0.5).calibration_share == 0.5
    assert InitSettings(calibration=0).calibration_share == 0


def test_evenly_spaced_lines_come_from_all_over_the_text():
    text = "\n".join(f"line {i}" for i in range(1000))
    sample = calibrate.evenly_spaced(text, 800)
    lines = sample.splitlines()
    assert lines[0] == "line 0" and int(lines[-1].split()[1]) > 900
    assert 600 < len(sample) < 1100
    assert calibrate.evenly_spaced("short", 800) == "short"
