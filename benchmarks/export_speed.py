"""GGUF export of the adapted demo model: export time, file size and peak memory per type, CPU generation speed in
llama.cpp, and a greedy Spanish continuation from llama.cpp next to the same from transformers (the end of `make demo`).

Each export runs in a fresh process so its peak memory (ru_maxrss) is its own; "streamed" means the peak stays near
the baseline of the imported libraries plus one tensor, far below the model's size.
Usage: python benchmarks/export_speed.py [--model demo-output/model-transtok] [--out demo-output]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import resource
import time
from pathlib import Path

from common import ROOT

PROMPT = "Y dijo Dios:"


def _export(model: str, out: str, kind: str) -> tuple[float, float, float]:
    """(seconds, MB resident before, peak MB) of one export, measured inside a fresh process."""
    from transformers import AutoTokenizer

    from core.export import ExportSettings, export_gguf

    AutoTokenizer.from_pretrained(model)  # libraries loaded before the baseline: they are not the export's memory
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.monotonic()
    export_gguf(model, out, ExportSettings(type=kind, languages=("es",), overwrite=True))
    return time.monotonic() - start, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "demo-output" / "model-transtok"))
    p.add_argument("--out", default=str(ROOT / "demo-output"))
    p.add_argument("--tokens", type=int, default=128, help="tokens generated for the speed figure")
    a = p.parse_args()
    model = Path(a.model)
    if not (model / "config.json").exists():
        raise SystemExit(f"{model} not found: run `make demo` (or benchmarks/init_quality.py) first")
    weights_mb = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 1e6
    print(f"Export of {model} ({weights_mb:,.0f} MB of float32 weights), {os.cpu_count()} CPU cores")
    print(f"{'type':<6} {'seconds':>8} {'file MB':>8} {'peak RSS MB':>12} {'libraries MB':>13} {'export MB':>10}")
    files = {}
    spawn = multiprocessing.get_context("spawn")
    for kind in ("f32", "f16", "q8_0"):
        files[kind] = Path(a.out) / f"spanish-{kind}.gguf"
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            seconds, before, peak = pool.submit(_export, str(model), str(files[kind]), kind).result()
        print(
            f"{kind:<6} {seconds:>8.2f} {files[kind].stat().st_size / 1e6:>8.0f} {peak:>12.0f} {before:>13.0f} "
            f"{peak - before:>10.0f}"
        )
    from core.models import safetensors_headers, weight_files

    largest = max(math.prod(t.shape) for t in safetensors_headers(weight_files(model)).values())
    print(
        f"(export MB = peak − libraries; streamed, it stays near a few copies of the largest tensor, "
        f"{largest * 4 / 1e6:,.0f} MB in float32, not the {weights_mb:,.0f} MB model)"
    )

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from core import runtime

    print(f"\nCPU generation in llama.cpp ({a.tokens} tokens, greedy, after a {len(PROMPT)}-character prompt):")
    tok = AutoTokenizer.from_pretrained(model)
    ids = tok(PROMPT)["input_ids"]
    for kind in ("f16", "q8_0"):
        llm = runtime.load(files[kind], runtime.RuntimeSettings(n_ctx=512))
        llm.eval(ids)  # prompt first, so the figure is generation alone
        start, n = time.monotonic(), 0
        for _ in llm.generate([], top_k=1, temp=0.0, reset=False):
            n += 1
            if n == a.tokens:
                break
        print(f"  {kind:<5} {n / (time.monotonic() - start):7.1f} tokens/s")

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids) :].tolist()
    llm = runtime.load(files["f32"], runtime.RuntimeSettings(n_ctx=512, exact=True))
    ours = []
    for token in llm.generate(ids, top_k=1, temp=0.0):
        if len(ours) == len(theirs) or token == llm.token_eos():
            break
        ours.append(token)
    print(f"\nGreedy continuation of {PROMPT!r} ({Path(a.model).name}):")
    print(f"  llama.cpp (f32 GGUF): {tok.decode(ours)!r}")
    print(f"  transformers:         {tok.decode(theirs)!r}")
    print("  identical token ids" if ours == theirs[: len(ours)] else "  token ids DIFFER")


if __name__ == "__main__":
    main()
