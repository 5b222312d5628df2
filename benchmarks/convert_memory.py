"""Peak memory of turning a GGUF source model into a Hugging Face folder: ours (core/convert.py, one tensor at a
time) against transformers' own GGUF loading (`from_pretrained(gguf_file=…)` + `save_pretrained`, what the studio
did before), each in a fresh process, on one GGUF.

The GGUF is a random-weight Llama whose layers, not its vocabulary, hold the weights (as in a 7B: 24 layers of
hidden 1024 with SmolLM2's 49k-token tokenizer, ≈ 360M parameters; Q8_0 by our exporter), so the figure that matters
— peak memory above the process's start, as a multiple of the model's size in BF16 — carries over to larger models.
`--gguf FILE` measures a GGUF of your own instead (e.g. Gemma 3 270M's, whose 262k-row embedding dominates).
Usage: python benchmarks/convert_memory.py [--layers 24] [--hidden 1024] [--gguf FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT

# Run in a child: prints "<RSS after imports> <peak RSS since then>" in KiB. Linux resets the peak (VmHWM) when "5"
# is written to clear_refs, so the imports' own peak does not count.
CHILD = """
import sys, tempfile, time
sys.path.insert(0, {root!r})
import torch, transformers
from core import models
torch.set_num_threads(1)

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

open("/proc/self/clear_refs", "w").write("5")
start, began = status("VmRSS:"), time.monotonic()
gguf = {gguf!r}
if sys.argv[1] == "ours":
    models.resolve(gguf)
else:
    from pathlib import Path
    model = transformers.AutoModelForCausalLM.from_pretrained(Path(gguf).parent, gguf_file=Path(gguf).name)
    model.hf_quantizer = None  # as the studio did: the dequantised model is saved as a plain one
    del model.config.quantization_config
    model.save_pretrained(tempfile.mkdtemp(dir={tmp!r}))
print(start, status("VmHWM:"), time.monotonic() - began)
"""


def random_llama_gguf(out: Path, layers: int, hidden: int) -> tuple[Path, int]:
    """A random-weight Llama with SmolLM2's tokenizer, exported as Q8_0; returns (file, parameter count)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from core import models
    from core.export import ExportSettings, export_gguf
    from core.extend import gguf_pre

    source = models.resolve(models.DEFAULT_MODEL)
    config = AutoConfig.from_pretrained(source)
    config.update(
        dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            intermediate_size=hidden * 11 // 4,
            num_attention_heads=hidden // 64,
            num_key_value_heads=hidden // 64,
        )
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = out / "random-llama"
    model.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    (folder / "project.json").write_text(
        json.dumps({"settings": {"extend": {"gguf_pre": gguf_pre(models.DEFAULT_MODEL)}}})
    )
    gguf = out / "random-llama.gguf"
    export_gguf(folder, gguf, ExportSettings(type="q8_0"))
    shutil.rmtree(folder)
    return gguf, parameters


def peak_above_start(way: str, gguf: Path, cache: Path, tmp: Path) -> tuple[float, float]:
    """(GiB the child grew by — its peak RSS during the conversion − its RSS before it —, seconds it took)."""
    import os

    code = CHILD.format(root=str(ROOT), gguf=str(gguf), tmp=str(tmp))
    env = {**os.environ, "TWEETY_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code, way], capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(f"{way} failed:\n{run.stderr[-3000:]}")
    start, end, seconds = run.stdout.split()[-3:]
    return (int(end) - int(start)) / 2**20, float(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--gguf", help="measure this GGUF instead of a random Llama")
    p.add_argument("--json")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if a.gguf:
            gguf, parameters = Path(a.gguf), None
        else:
            gguf, parameters = random_llama_gguf(work, a.layers, a.hidden)
        results = {}
        for way in ("transformers", "ours"):
            cache = work / f"cache-{way}"
            results[way] = peak_above_start(way, gguf, cache, work)
        if parameters is None:  # the converted folder tells: count from its safetensors header
            from core import models

            folder = next((work / "cache-ours" / "models").iterdir())
            parameters = sum(
                int(np.prod(t.shape)) for t in models.safetensors_headers(models.weight_files(folder)).values()
            )
    bf16 = parameters * 2 / 2**30
    print(f"GGUF {gguf.name}: {parameters / 1e6:.0f}M parameters, {bf16:.2f} GiB in BF16")
    print(f"{'conversion':<14} {'peak above start':>17} {'× BF16 model':>13} {'seconds':>8}")
    for way, (gib, seconds) in results.items():
        print(f"{way:<14} {gib:>13.2f} GiB {gib / bf16:>12.2f}× {seconds:>8.0f}")
    print(f"ours / transformers: {results['ours'][0] / results['transformers'][0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"parameters": parameters, "peak_gib_and_seconds": results}, indent=2))


if __name__ == "__main__":
    main()
