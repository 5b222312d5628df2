"""Two real source models side by side on the demo data: SmolLM2-135M (byte-level BPE, 49k tokens) and Gemma 3 270M
(SentencePiece-style, 262k tokens; the `gemma` extra). For each: held-out Spanish bits per byte and tokens per byte of
the source model, of the trans-tokenized model at step 0 (replacement vocabulary) and after the same short CPU
fine-tune (embeddings stage); parameters and F16 GGUF size before/after; llama.cpp generation tokens/s before/after
(F16 GGUFs written by our exporter, same prompt, greedy, same thread count).

Usage: python benchmarks/families.py [--vocab 16000] [--train-lines 30423] [--steps 40] [--max-bytes 20000]
                                     [--models smollm2,gemma] [--out demo-output/families] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import DEMO, ROOT, StageTimer

from core import finetune, models, resources, runtime
from core.evaluate import bits_per_byte
from core.export import ExportSettings, export_gguf
from core.models import load_model
from core.pipeline import AdaptSettings, adapt
from core.tokenizer import TokenizerSettings


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def gguf_source_folder(spec: str, out: Path) -> Path:
    """The converted source folder, ready for our exporter: a byte-level BPE source needs llama.cpp's pre-tokenizer
    name, which an adapted project records and the converted folder lacks (linked files plus a project.json)."""
    from core.extend import gguf_pre

    folder = models.resolve(spec)
    pre = gguf_pre(spec)
    if pre is None:
        return folder
    linked = out / "source-folder"
    shutil.rmtree(linked, ignore_errors=True)
    linked.mkdir(parents=True)
    for f in folder.iterdir():
        (linked / f.name).symlink_to(f)
    (linked / "project.json").write_text(json.dumps({"settings": {"extend": {"gguf_pre": pre}}}))
    return linked


def llama_cpp_speed(path: Path, prompt: str, tokens: int, threads: int) -> float:
    """Generation tokens/s (prompt excluded), greedy, `tokens` new tokens."""
    llm = runtime.load(path, runtime.RuntimeSettings(n_ctx=512, threads=threads))
    ids = llm.tokenize(prompt.encode(), add_bos=True)
    llm.eval(ids)
    start, n = time.monotonic(), 0
    for _ in llm.generate(ids, top_k=1, temp=0.0, reset=False):
        n += 1
        if n == tokens:
            break
    return n / (time.monotonic() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2,gemma")
    p.add_argument("--vocab", type=int, default=16000)
    p.add_argument("--train-lines", type=int, default=30423, help="verse pairs for tokenizer and alignment")
    p.add_argument("--steps", type=int, default=40, help="fine-tuning steps (embeddings stage, 4 × 128 tokens)")
    p.add_argument("--max-bytes", type=int, default=20_000, help="held-out Spanish bytes to score")
    p.add_argument("--speed-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "demo-output" / "families"))
    p.add_argument("--json")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = {"smollm2": ("SmolLM2-135M", models.DEFAULT_MODEL)}
    gemma = models.gemma_gguf()
    if gemma is not None:
        sources["gemma"] = ("Gemma 3 270M", str(gemma))
    heldout_text = (
        resources.read_text(DEMO / "bible.heldout.es.gz").encode()[: a.max_bytes].decode("utf-8", errors="ignore")
    )
    heldout_file = out / "heldout.es"
    heldout_file.write_text(heldout_text, encoding="utf-8")
    en = resources.read_lines(DEMO / "bible.train.en.gz")[: a.train_lines]
    es = resources.read_lines(DEMO / "bible.train.es.gz")[: a.train_lines]
    (out / "train.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    (out / "train.es").write_text("\n".join(es) + "\n", encoding="utf-8")
    prompt = "En el principio creó Dios los cielos y la tierra."
    rows = {}
    for key in a.models.split(","):
        if key not in sources:
            print(f"{key}: not installed, skipped")
            continue
        name, spec = sources[key]
        print(f"\n{name}", flush=True)
        timer = StageTimer()
        work = out / key
        shutil.rmtree(work, ignore_errors=True)
        model, tok = timer("load source", load_model, spec)
        source = timer("source BPB", bits_per_byte, model, tok, heldout_text)
        source_params = parameters(model)
        del model
        result = timer(
            "adapt (replace)",
            adapt,
            AdaptSettings(
                source_model=spec,
                target_text=str(out / "train.es"),
                parallel=(str(out / "train.en"), str(out / "train.es")),
                language="es",
                out=str(work / "project"),
                tokenizer=TokenizerSettings(vocab_size=a.vocab),
            ),
        )
        model, tok = load_model(result.model)
        step0 = timer("step-0 BPB", bits_per_byte, model, tok, heldout_text)
        adapted_params = parameters(model)
        del model
        s = finetune.FinetuneSettings(
            steps=a.steps,
            block_size=128,
            batch_size=4,
            eval_every=a.steps,
            eval_max_bytes=a.max_bytes,
            checkpoint_every=a.steps,
        )
        tuned = timer("fine-tune", finetune.finetune, result.model, out / "train.es", heldout_file, work / "tuned", s)
        after = timer("tuned BPB", bits_per_byte, *load_model(work / "tuned"), heldout_text)
        src_gguf = timer(
            "export source",
            export_gguf,
            gguf_source_folder(spec, work),
            work / "source-f16.gguf",
            ExportSettings(type="f16", overwrite=True),
        )
        new_gguf = timer(
            "export adapted",
            export_gguf,
            work / "tuned",
            work / "adapted-f16.gguf",
            ExportSettings(type="f16", overwrite=True),
        )
        speed_before = llama_cpp_speed(src_gguf.path, prompt, a.speed_tokens, a.threads)
        speed_after = llama_cpp_speed(new_gguf.path, prompt, a.speed_tokens, a.threads)
        rows[name] = {
            "source": source.__dict__,
            "step0": step0.__dict__,
            "tuned": after.__dict__,
            "finetune_steps": tuned.steps,
            "finetune_tokens_per_s": tuned.tokens_per_s,
            "parameters": [source_params, adapted_params],
            "gguf_f16_bytes": [src_gguf.bytes, new_gguf.bytes],
            "llama_cpp_tokens_per_s": [speed_before, speed_after],
            "seconds": timer.seconds,
        }
    bytes_scored = len(heldout_text.encode())
    print(
        f"\nHeld-out Spanish (first {bytes_scored:,} bytes), vocabulary {a.vocab:,}, {a.steps} fine-tuning steps, "
        f"llama.cpp F16 with {a.threads} threads:\n"
    )
    print(
        "| model | source bits/byte | step 0 | after fine-tune | source tokens/byte | adapted tokens/byte | "
        "parameters | F16 GGUF | llama.cpp tokens/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        (p0, p1), (g0, g1), (v0, v1) = r["parameters"], r["gguf_f16_bytes"], r["llama_cpp_tokens_per_s"]
        print(
            f"| {name} | {r['source']['bits_per_byte']:.3f} | {r['step0']['bits_per_byte']:.3f} | "
            f"{r['tuned']['bits_per_byte']:.3f} | {r['source']['tokens_per_byte']:.3f} | "
            f"{r['step0']['tokens_per_byte']:.3f} | {p0 / 1e6:.0f}M → {p1 / 1e6:.0f}M | "
            f"{g0 / 1e6:.0f} → {g1 / 1e6:.0f} MB | {v0:.0f} → {v1:.0f} |"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
