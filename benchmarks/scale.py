"""Cost of adaptation as the model grows: SmolLM2-135M against a 7B-shaped Llama (bf16, 128k vocabulary).

The 7B-shaped model has random bf16 weights (Llama-2-7B's body: 32 layers, hidden 4096, MLP 11008, 32 heads; a
Llama-3-sized vocabulary of 128,256 with an untied head: 7.5B parameters, 15 GB), written once as 5 GB safetensors
shards with an index into the cache (`TWEETY_CACHE`, default ~/.cache/tweety-studio/bench/). Its tokenizer is
SmolLM2's byte-level BPE padded to 128,256 entries with reserved tokens (as Llama 3 reserves some), so alignment and
mapping see a real tokenizer and the embedding table has the full size. Each model is adapted to Spanish on the demo
data (16k target vocabulary, 30k verse pairs) in a child process of its own, so its peak resident memory is its own.
Prints wall time per stage and peak RSS for both, and the ratios. Needs ~30 GB of free disk for the 7B case.
Usage: python benchmarks/scale.py [--vocab-size 16000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import struct
import tempfile
import time
from pathlib import Path

from common import DEMO

from core import models

SHAPE = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}
SHARD_BYTES = 5 << 30


def _tensors(c: dict) -> list[tuple[str, list[int]]]:
    h, m, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    out = [("model.embed_tokens.weight", [v, h])]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", [h]),
            (p + "post_attention_layernorm.weight", [h]),
            (p + "self_attn.q_proj.weight", [h, h]),
            (p + "self_attn.k_proj.weight", [kv, h]),
            (p + "self_attn.v_proj.weight", [kv, h]),
            (p + "self_attn.o_proj.weight", [h, h]),
            (p + "mlp.gate_proj.weight", [m, h]),
            (p + "mlp.up_proj.weight", [m, h]),
            (p + "mlp.down_proj.weight", [h, m]),
        ]
    return out + [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def build_7b_shaped(folder: Path) -> Path:
    """Write the random bf16 model folder once (tensor data tiled from one random block: content is irrelevant to
    time and memory)."""
    import torch

    if (folder / "model.safetensors.index.json").exists():
        return folder
    smol = models.resolve("default")
    config = json.loads((smol / "config.json").read_text())
    config.update(SHAPE, torch_dtype="bfloat16", dtype="bfloat16")
    tensors = _tensors(config)
    shards, current, size = [], [], 0
    for name, shape in tensors:
        nbytes = 2 * int(torch.tensor(shape).prod())
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape, nbytes))
        size += nbytes
    shards.append(current)
    block = (torch.randn(16 << 20, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    block = block.view(torch.uint8).numpy().tobytes()
    tmp = Path(tempfile.mkdtemp(prefix=".7b-", dir=folder.parent))
    weight_map = {}
    for k, shard in enumerate(shards, start=1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for tensor, shape, nbytes in shard:
            header[tensor] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[tensor] = name
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(tmp / name, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for _, _, nbytes in shard:
                while nbytes:
                    f.write(block[: min(nbytes, len(block))])
                    nbytes -= min(nbytes, len(block))
        print(f"  wrote {name} ({offset / 1e9:.1f} GB)", flush=True)
    total = sum(n for shard in shards for _, _, n in shard)
    (tmp / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = json.loads((smol / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    for i in range(len(vocab), SHAPE["vocab_size"]):
        vocab[f"<|reserved_{i}|>"] = i  # unreachable by any merge: shape only, as Llama 3's reserved tokens
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    for extra in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (smol / extra).exists():
            shutil.copy(smol / extra, tmp / extra)
    tmp.rename(folder)
    return folder


def _adapt(source: str, out: str, vocab_size: int, queue) -> None:
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    start = time.monotonic()
    result = adapt(
        AdaptSettings(
            source_model=source,
            target_text=str(DEMO / "bible.train.es.gz"),
            parallel=(str(DEMO / "bible.train.en.gz"), str(DEMO / "bible.train.es.gz")),
            out=out,
            tokenizer=TokenizerSettings(vocab_size=vocab_size),
        )
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    queue.put({"seconds": result.seconds, "total": time.monotonic() - start, "peak_rss": peak})


def measure(source: str, out: Path, vocab_size: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=_adapt, args=(source, str(out), vocab_size, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"adapting {source} failed (exit {child.exitcode})")
    return queue.get()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--keep", action="store_true", help="keep the adapted 7B-shaped folder (14 GB)")
    a = p.parse_args()
    bench = models.cache_dir() / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    print("7B-shaped source model (once):", flush=True)
    big = build_7b_shaped(bench / "llama-7b-shaped-bf16")
    results = {}
    for name, source in (("SmolLM2-135M", "default"), ("7B-shaped", str(big))):
        print(f"adapting {name} …", flush=True)
        results[name] = measure(source, bench / f"adapted-{name}", a.vocab_size)
    if not a.keep:
        shutil.rmtree(bench / "adapted-7B-shaped", ignore_errors=True)
    small, large = results["SmolLM2-135M"], results["7B-shaped"]
    stages = list(large["seconds"])
    print(f"\n{'stage (s)':<14}" + "".join(f"{s:>13}" for s in stages) + f"{'total':>10}{'peak RSS':>12}")
    for name, r in results.items():
        print(
            f"{name:<14}"
            + "".join(f"{r['seconds'][s]:>13.1f}" for s in stages)
            + f"{r['total']:>10.1f}{r['peak_rss'] / 2**30:>10.2f} GiB"
        )
    print(
        f"{'ratio':<14}"
        + "".join(f"{large['seconds'][s] / max(small['seconds'][s], 0.01):>12.1f}×" for s in stages)
        + f"{large['total'] / small['total']:>9.1f}×{large['peak_rss'] / small['peak_rss']:>11.1f}×"
    )
    print(f"goal: peak RSS ≤ 8 GiB for the 7B-shaped model — {'met' if large['peak_rss'] <= 8 * 2**30 else 'NOT met'}")


if __name__ == "__main__":
    main()
