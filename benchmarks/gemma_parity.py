"""F32 GGUF parity of an adapted Gemma: llama.cpp's logits against transformers' on one held-out verse (64 tokens).

With a stock llama.cpp the difference is ~1e-2 on Gemma 3 270M's 18 layers: ggml computes GELU on the CPU from a
float16 table (GGML_GELU_FP16). `bash benchmarks/exact_gelu.sh` builds llama-cpp-python once with that table
switched off and runs this script with it: what is left is the exporter's own error.
Usage: python benchmarks/gemma_parity.py [--model demo-output/families/gemma/tuned] [--gguf FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import DEMO, ROOT


def main() -> None:
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core import runtime
    from core.export import ExportSettings, export_gguf
    from core.resources import read_lines

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default=str(ROOT / "demo-output" / "families" / "gemma" / "tuned"),
        help="an adapted Gemma folder (benchmarks/families.py writes this one)",
    )
    p.add_argument("--gguf", default=str(ROOT / "demo-output" / "gemma-parity-f32.gguf"))
    a = p.parse_args()
    torch.set_num_threads(1)
    folder, gguf = Path(a.model), Path(a.gguf)
    export_gguf(folder, gguf, ExportSettings(type="f32", overwrite=True))
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(read_lines(DEMO / "bible.heldout.es.gz")[0])["input_ids"][:64]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = runtime.load(gguf, runtime.RuntimeSettings(n_ctx=256, exact=True, threads=1))
    llm.reset()
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    print(f"llama_cpp: {llama_cpp.__file__}")
    print(
        f"{folder}: {len(ids)} positions, F32 max |Δlogit| {np.abs(got - expected).max():.2e}, top-1 equal at "
        f"{(got.argmax(-1) == expected.argmax(-1)).mean():.0%}, logit std {expected.std():.2f}"
    )


if __name__ == "__main__":
    main()
