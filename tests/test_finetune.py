"""Fine-tuning on real weights (SmolLM2-135M truncated to 4 layers, adapted to a 800-token Spanish vocabulary):
the right tensors train, frozen ones stay bit-identical, a cancelled run resumes to the same curve, bad input is
refused with a clear message."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading

import pytest
import torch
from conftest import demo_lines, write_lines
from safetensors.torch import load_file

from core.errors import TweetyError
from core.finetune import BlockOrder, FinetuneSettings, RunState, finetune, learning_rate, pack_blocks
from core.jobs import Cancelled, CancelToken

QUICK = dict(block_size=32, batch_size=2, warmup_steps=2, eval_every=100, checkpoint_every=100, lr=2e-3)


@pytest.fixture(scope="module")
def small(module_tmp, source, target_tokenizer, pairs):
    """A 4-layer cut of the real SmolLM2 weights, FVT-initialised for the 800-token target tokenizer, plus texts."""
    from core.init import initialise, save_adapted
    from core.mapping import fvt_mapping

    model, source_tok = source
    cut = copy.deepcopy(model)
    cut.model.layers = cut.model.layers[:4]
    cut.config.num_hidden_layers = 4
    if getattr(cut.config, "layer_types", None):
        cut.config.layer_types = cut.config.layer_types[:4]
    initialise(cut, fvt_mapping(source_tok, target_tokenizer))
    d = module_tmp("finetune")
    save_adapted(cut, target_tokenizer, d / "model")
    write_lines(d / "train.es", pairs[1])
    write_lines(d / "heldout.es", demo_lines("bible.heldout.es.gz", 15))
    return d


def tensors(folder):
    return load_file(folder / "model.safetensors")


def test_embeddings_stage_trains_only_embeddings_and_lowers_heldout_bpb(small, tmp_path):
    events = []
    result = finetune(
        small / "model",
        small / "train.es",
        small / "heldout.es",
        tmp_path / "ft",
        FinetuneSettings(steps=8, **QUICK | {"eval_every": 4}),
        progress=events.append,
    )
    before, after = tensors(small / "model"), tensors(tmp_path / "ft")
    assert set(before) == set(after)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"model.embed_tokens.weight"}  # tied: the head is this matrix
    assert result.final_bpb < result.initial_bpb - 0.05
    assert [r.step for r in result.curve] == list(range(1, 9))
    assert [r.step for r in result.curve if r.heldout_bpb is not None] == [4, 8]
    assert [e.metrics for e in events if e.metrics and "loss" not in e.metrics] == [
        {"step": 0, "heldout_bpb": result.initial_bpb}
    ]
    steps = [e.metrics for e in events if e.metrics and "loss" in e.metrics]
    assert [m["step"] for m in steps] == list(range(1, 9)) and all(m["tokens_per_s"] > 0 for m in steps)
    # The optimizer holds moments for the trainable matrix only (what keeps a 7B body free of optimizer memory).
    moments = load_file(tmp_path / "ft" / "training" / "checkpoint" / "optimizer.safetensors")
    assert (
        sum(v.numel() for k, v in moments.items() if not k.endswith(".step"))
        == 2 * before["model.embed_tokens.weight"].numel()
    )
    # Logs: CSV and JSON rows per step, a PNG curve; the output loads as a normal model.
    csv_rows = (tmp_path / "ft" / "training" / "log.csv").read_text().splitlines()
    assert len(csv_rows) == 9 and csv_rows[0].startswith("step,loss")
    assert (tmp_path / "ft" / "training" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    from core.evaluate import bits_per_byte
    from core.models import load_model
    from core.resources import read_text

    model, tok = load_model(tmp_path / "ft")
    held = read_text(small / "heldout.es")[: FinetuneSettings().eval_max_bytes]
    assert bits_per_byte(model, tok, held).bits_per_byte == pytest.approx(result.final_bpb, abs=1e-4)


def test_the_model_written_is_calibrated_and_the_checkpoint_keeps_the_trained_weights(small, tmp_path):
    """The fine-tune ends with a frequency calibration on the training text (core.calibrate): the model written reads
    held-out text better than the same run's trained weights, which the checkpoint keeps for a resumed run."""
    runs = {
        share: finetune(
            small / "model",
            small / "train.es",
            small / "heldout.es",
            tmp_path / str(share),
            FinetuneSettings(steps=4, calibration=share, **QUICK),
        )
        for share in (0.0, 1.0)
    }
    plain, calibrated = runs[0.0], runs[1.0]
    assert [r.loss for r in calibrated.curve] == [r.loss for r in plain.curve]
    assert calibrated.final_bpb < plain.final_bpb - 0.05
    assert not torch.equal(
        tensors(tmp_path / "0.0")["model.embed_tokens.weight"], tensors(tmp_path / "1.0")["model.embed_tokens.weight"]
    )

    def trained(share):
        return load_file(tmp_path / str(share) / "training" / "checkpoint" / "trainable.safetensors")

    assert torch.equal(trained(0.0)["model.embed_tokens.weight"], trained(1.0)["model.embed_tokens.weight"])
    assert torch.equal(
        trained(0.0)["model.embed_tokens.weight"], tensors(tmp_path / "0.0")["model.embed_tokens.weight"]
    )


def test_outer_layers_stage_trains_first_and_last_layers(small, tmp_path):
    finetune(
        small / "model",
        small / "train.es",
        None,
        tmp_path / "ft",
        FinetuneSettings(stage="outer-layers", outer_layers=1, steps=2, **QUICK),
    )
    before, after = tensors(small / "model"), tensors(tmp_path / "ft")
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    layers = {int(n.split(".")[2]) for n in changed if ".layers." in n}
    assert layers == {0, 3}
    assert {"model.embed_tokens.weight", "model.norm.weight"} <= changed
    assert not any(".layers.1." in n or ".layers.2." in n for n in changed)


def test_cancelled_run_resumes_to_the_uninterrupted_curve(small, tmp_path):
    settings = FinetuneSettings(steps=6, **QUICK)
    whole = finetune(small / "model", small / "train.es", None, tmp_path / "whole", settings)

    cancel = CancelToken()

    def stop_after_3(p):
        if p.metrics and p.metrics["step"] == 3:
            cancel.cancel()

    with pytest.raises(Cancelled):
        finetune(
            small / "model",
            small / "train.es",
            None,
            tmp_path / "split",
            settings,
            progress=stop_after_3,
            cancel=cancel,
        )
    state = RunState.load(tmp_path / "split" / "training" / "checkpoint" / "state.json")
    assert state.step == 3 and not state.finished
    assert not (tmp_path / "split" / "config.json").exists()  # not a model until finished
    with pytest.raises(TweetyError, match="unfinished fine-tuning run"):
        finetune(small / "model", small / "train.es", None, tmp_path / "split", settings)
    with pytest.raises(TweetyError, match="different lr"):
        finetune(
            small / "model",
            small / "train.es",
            None,
            tmp_path / "split",
            FinetuneSettings(steps=6, **QUICK | {"lr": 1e-4}),
            resume=True,
        )

    resumed = finetune(small / "model", small / "train.es", None, tmp_path / "split", settings, resume=True)
    assert resumed.resumed_from == 3
    assert [r.loss for r in resumed.curve] == pytest.approx([r.loss for r in whole.curve], abs=1e-4)
    a, b = tensors(tmp_path / "whole"), tensors(tmp_path / "split")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_a_run_stopped_before_its_model_was_written_resumes_to_write_it(small, tmp_path):
    settings = FinetuneSettings(steps=2, **QUICK)
    whole = finetune(small / "model", small / "train.es", None, tmp_path / "ft", settings)
    written = tensors(tmp_path / "ft")
    (tmp_path / "ft" / "config.json").unlink()  # killed after the last checkpoint, before config.json (written last)
    resumed = finetune(small / "model", small / "train.es", None, tmp_path / "ft", settings, resume=True)
    assert resumed.steps == whole.steps == 2 and (tmp_path / "ft" / "config.json").exists()
    for name, tensor in tensors(tmp_path / "ft").items():
        torch.testing.assert_close(tensor, written[name], atol=1e-6, rtol=0)
    with pytest.raises(TweetyError, match="already has 2 steps"):  # once written, the same steps are refused again
        finetune(small / "model", small / "train.es", None, tmp_path / "ft", settings, resume=True)


def test_checkpoint_from_another_version_resumes_or_is_refused_plainly(small, tmp_path):
    """state.json written by another version: unknown keys are dropped, missing ones take their defaults (a setting
    the older version lacked counts as its default), and a state without what resuming needs is a TweetyError —
    never a TypeError from the dataclass."""
    from core.finetune import checkpoint_state

    settings = FinetuneSettings(steps=2, **QUICK)
    finetune(small / "model", small / "train.es", None, tmp_path / "ft", settings)
    path = tmp_path / "ft" / "training" / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    state["written_by"] = "Tweety Studio 9.0"  # a key this version does not know
    del state["seconds"]  # … and one it has a default for
    state["settings"]["future_knob"] = 3
    del state["settings"]["device"]  # a setting the older version did not have: it ran at the default
    for record in state["curve"]:
        record["grad_norm"] = 1.0
    path.write_text(json.dumps(state))
    loaded = checkpoint_state(tmp_path / "ft")
    assert loaded.step == 2 and loaded.finished and loaded.seconds == 0.0 and len(loaded.curve) == 2
    resumed = finetune(
        small / "model", small / "train.es", None, tmp_path / "ft", FinetuneSettings(steps=3, **QUICK), resume=True
    )
    assert resumed.resumed_from == 2 and [r.step for r in resumed.curve] == [1, 2, 3]

    state = json.loads(path.read_text())
    del state["text_sha256"]
    path.write_text(json.dumps(state))
    with pytest.raises(TweetyError, match="another version of Tweety Studio.*text_sha256"):
        checkpoint_state(tmp_path / "ft")
    with pytest.raises(TweetyError, match="another version"):
        finetune(
            small / "model", small / "train.es", None, tmp_path / "ft", FinetuneSettings(steps=4, **QUICK), resume=True
        )


def test_settings_from_another_version():
    data = dataclasses.asdict(FinetuneSettings(steps=7))
    data["future_knob"] = 1
    del data["device"]
    assert FinetuneSettings.from_dict(data) == FinetuneSettings(steps=7)


def test_bad_inputs_are_refused_clearly(small, tmp_path):
    quick = FinetuneSettings(steps=1, **QUICK)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(TweetyError, match="empty"):
        finetune(small / "model", tmp_path / "empty.txt", None, tmp_path / "a", quick)
    write_lines(tmp_path / "short.txt", ["Y dijo Dios."])
    with pytest.raises(TweetyError, match="shorter than one block") as e:
        finetune(small / "model", tmp_path / "short.txt", None, tmp_path / "b", quick)
    assert "short.txt" in str(e.value)
    (tmp_path / "notmodel").mkdir()
    with pytest.raises(TweetyError, match="no config.json"):
        finetune(tmp_path / "notmodel", small / "train.es", None, tmp_path / "c", quick)
    with pytest.raises(TweetyError, match="nothing|no fine-tuning run to resume"):
        finetune(small / "model", small / "train.es", None, tmp_path / "d", quick, resume=True)
    with pytest.raises(TweetyError, match="unknown stage"):
        finetune(small / "model", small / "train.es", None, tmp_path / "e", FinetuneSettings(stage="all"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(TweetyError, match="never overwrites"):
        finetune(small / "model", small / "train.es", None, mine, quick)
    assert (mine / "notes.txt").read_text() == "mine"


def test_schedule_and_block_order():
    s = FinetuneSettings(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(s, 0) == pytest.approx(0.1) and learning_rate(s, 9) == pytest.approx(1.0)
    assert learning_rate(s, 10) == pytest.approx(1.0) and learning_rate(s, 100) == pytest.approx(0.1)
    assert learning_rate(s, 55) == pytest.approx(0.55)  # cosine midpoint between 1.0 and 0.1
    linear = FinetuneSettings(steps=100, lr=1.0, warmup_steps=10, schedule="linear")
    assert learning_rate(linear, 55) == pytest.approx(0.5) and learning_rate(linear, 100) == 0
    order = BlockOrder(7, seed=3)
    first, second = order.indices(0, 7), order.indices(7, 7)
    assert sorted(first) == sorted(second) == list(range(7)) and first != second  # each epoch: all, reshuffled
    assert BlockOrder(7, seed=3).indices(9, 3) == second[2:5]  # depends on the position only (exact resume)


def test_blocks_open_with_the_document_start_token(small, target_tokenizer):
    from core.evaluate import document_start_id
    from core.resources import read_lines

    blocks = pack_blocks(target_tokenizer, read_lines(small / "train.es"), 64)
    assert blocks.shape[1] == 64 and blocks.shape[0] > 100
    assert (blocks[:, 0] == document_start_id(target_tokenizer)).all()
    text = target_tokenizer.decode(blocks[:2, 1:].flatten().tolist())
    assert text.startswith(read_lines(small / "train.es")[0])


def test_a_share_of_passages_trains_as_chat_turns_that_end(small, target_tokenizer):
    """Issue 32: the fine-tune keeps the chat format alive — a seeded share of passages become conversations in the
    model's own template, every turn ending in its end-of-turn token; no line is lost."""
    from core.finetune import training_pieces
    from core.resources import read_lines

    lines = read_lines(small / "train.es")[:400]
    assert target_tokenizer.chat_template and "<|im_end|>" in target_tokenizer.get_vocab()
    raw = training_pieces(target_tokenizer, lines, 0.0, 0)
    assert "".join(raw) == "".join(line + "\n" for line in lines)  # share 0: exactly the text as before

    pieces = training_pieces(target_tokenizer, lines, 0.25, 0)
    assert pieces == training_pieces(target_tokenizer, lines, 0.25, 0)  # seeded: a resumed run reads the same
    assert pieces != training_pieces(target_tokenizer, lines, 0.25, 1)
    chats = [p for p in pieces if p.startswith("<|im_start|>")]
    assert len(chats) == 25  # 25 of the 100 passages
    for chat in chats:  # rendered as llama.cpp renders a chat: the default system prompt, turns that end
        assert chat.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        assert chat.endswith("<|im_end|>\n") and chat.count("<|im_start|>assistant\n") in (1, 2)
        assert chat.count("<|im_end|>") == 1 + 2 * chat.count("<|im_start|>assistant\n")
    said = "".join(pieces)
    assert all(line.strip() in said for line in lines)  # every line, as raw text or inside a turn

    end = target_tokenizer.convert_tokens_to_ids("<|im_end|>")
    blocks = pack_blocks(target_tokenizer, lines, 64, chat_share=0.25)
    assert (blocks == end).sum() >= 0.9 * sum(c.count("<|im_end|>") for c in chats)
    assert (pack_blocks(target_tokenizer, lines, 64) == end).sum() == 0

    class Base:  # a tokenizer without a chat template (a base model): raw text only
        chat_template = None

    assert training_pieces(Base(), lines, 0.5, 0) == raw


def test_pause_blocks_at_the_next_check_until_resumed():
    token = CancelToken()
    token.pause()
    passed = threading.Event()
    worker = threading.Thread(target=lambda: (token.check(), passed.set()))
    worker.start()
    assert not passed.wait(0.3)
    token.resume()
    assert passed.wait(5)
    worker.join()


def test_cli_finetune_writes_model_and_curve(small, tmp_path):
    from test_cli import tweety

    result = tweety(
        "finetune",
        "--model",
        small / "model",
        "--text",
        small / "train.es",
        "--heldout",
        small / "heldout.es",
        "--steps",
        2,
        "--block-size",
        32,
        "--batch-size",
        2,
        "--warmup",
        1,
        "--out",
        tmp_path / "ft",
    )
    assert "held-out bits per byte" in result.stdout
    log = json.loads((tmp_path / "ft" / "training" / "log.json").read_text())
    assert [r["step"] for r in log["curve"]] == [1, 2] and log["curve"][-1]["heldout_bpb"] < log["initial_bpb"]
    bad = tweety(
        "finetune",
        "--model",
        small / "model",
        "--text",
        small / "train.es",
        "--heldout",
        small / "heldout.es",
        "--out",
        tmp_path / "ft",
        "--resume",
        "--steps",
        2,
        "--block-size",
        32,
        "--batch-size",
        2,
        "--warmup",
        1,
        check=False,
    )
    assert bad.returncode == 2 and "already has 2 steps" in bad.stderr


def test_held_out_before_training_is_measured_after_the_first_step_on_the_weights_as_they_were(small, tmp_path):
    """The first step is shown before the (slow) step-0 held-out measurement, which still measures the untrained
    weights; sub-steps say what is happening ("reading text", "step 1 of 2")."""
    from core.evaluate import bits_per_byte
    from core.models import load_model
    from core.resources import head_bytes, read_text

    events = []
    settings = FinetuneSettings(steps=2, **QUICK)
    result = finetune(
        small / "model", small / "train.es", small / "heldout.es", tmp_path / "ft", settings, progress=events.append
    )
    model, tok = load_model(small / "model")
    held = head_bytes(read_text(small / "heldout.es"), settings.eval_max_bytes)
    assert result.initial_bpb == pytest.approx(bits_per_byte(model, tok, held).bits_per_byte, abs=1e-4)
    order = [e.metrics.get("loss") is not None and e.metrics["step"] or "bpb0" for e in events if e.metrics]
    assert order[:2] == [1, "bpb0"]
    messages = [e.message for e in events]
    assert "reading text" in messages and any(m.startswith("step 1 of 2 · loss") for m in messages)
    assert any(e.stage == "Fine-tuning: measuring held-out text" for e in events)
