#!/usr/bin/env bash
# The prepared GPU run (issue 20): the figures only a GPU gives, in one script, first thing on a lent machine.
#   1. fine-tune throughput: our loop against a plain transformers.Trainer, same settings, same process
#      (benchmarks/finetune.py), on SmolLM2-135M and on Gemma 3 270M adapted to Spanish;
#   2. the held-out bits-per-byte-vs-minutes curve of both (the same runs, evaluated every --eval-every steps);
#   3. the torch aligner on the GPU against fast_align (CPU) on the demo corpus, same token ids (benchmarks/align_speed.py).
# Results: one JSON per part in the output folder (default demo-output/gpu), the printed tables, and a summary.
# Usage: bash benchmarks/gpu.sh [--tiny] [--out DIR]
# `--tiny` runs every part with tiny settings on the CPU (400 verse pairs, 800-token vocabularies, 4 steps, 2,000
# held-out bytes, the Trainer baseline once): tests/test_gpu_script.py runs it, so it cannot rot (~3 min, 2 cores).
# Budget on one H200: about 8 minutes (adapting each model ~1 min, 600 + 600 fine-tuning steps, 60 Trainer steps each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TINY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) TINY=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: bash benchmarks/gpu.sh [--tiny] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [[ $TINY == 1 ]]; then
  OUT=${OUT:-demo-output/gpu-tiny}
  VOCAB=800 LINES=400 STEPS=4 TRAINER=3 TRAINER_RUNS=1 EVAL=2 EVAL_BYTES=2000 FULL_EVAL_BYTES=2000 ALIGN_LINES=300
else
  OUT=${OUT:-demo-output/gpu}
  VOCAB=16000 LINES=30423 STEPS=600 TRAINER=60 TRAINER_RUNS=2 EVAL=100 EVAL_BYTES=30000 FULL_EVAL_BYTES=0
  ALIGN_LINES=30423
fi
mkdir -p "$OUT"
start=$SECONDS
"$PY" - "$OUT" "$VOCAB" "$LINES" <<'PYEOF'
# Adapt each installed source model once (replacement vocabulary), so that the fine-tuning runs start from it.
import sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from common import DEMO
from core import models, resources
from core.pipeline import AdaptSettings, adapt
from core.tokenizer import TokenizerSettings
out, vocab, lines = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
en = resources.read_lines(DEMO / "bible.train.en.gz")[:lines]
es = resources.read_lines(DEMO / "bible.train.es.gz")[:lines]
(out / "train.en").write_text("\n".join(en) + "\n"); (out / "train.es").write_text("\n".join(es) + "\n")
sources = {"smollm2": models.DEFAULT_MODEL}
if models.gemma_gguf() is not None:
    sources["gemma"] = str(models.gemma_gguf())
else:
    print("Gemma 3 270M is not installed (the gemma extra): SmolLM2 only", flush=True)
for key, spec in sources.items():
    if (out / key / "model" / "config.json").exists():
        continue
    adapt(AdaptSettings(source_model=spec, target_text=str(out / "train.es"),
                        parallel=(str(out / "train.en"), str(out / "train.es")), language="es", out=str(out / key),
                        tokenizer=TokenizerSettings(vocab_size=vocab)))
    print(f"adapted {key}: {out / key / 'model'}", flush=True)
PYEOF
for key in smollm2 gemma; do
  [[ -d "$OUT/$key/model" ]] || continue
  echo "== fine-tuning $key: our loop vs transformers.Trainer, held-out BPB vs minutes"
  rm -rf "$OUT/$key-tuned"
  "$PY" benchmarks/finetune.py --model "$OUT/$key/model" --out "$OUT/$key-tuned" --steps "$STEPS" \
    --trainer-steps "$TRAINER" --trainer-runs "$TRAINER_RUNS" --eval-every "$EVAL" --eval-max-bytes "$EVAL_BYTES" \
    --full-eval-bytes "$FULL_EVAL_BYTES" --json "$OUT/finetune-$key.json"
done
echo "== aligners: torch (GPU if any) vs fast_align"
"$PY" benchmarks/align_speed.py --lines "$ALIGN_LINES" --tokenizer "$OUT/smollm2/model" --json "$OUT/align.json" \
  ${FAST_ALIGN_BIN:+--fast-align-bin "$FAST_ALIGN_BIN"}
"$PY" - "$OUT" <<'PYEOF'
# One summary of the figures the parts wrote.
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("== summary")
for key in ("smollm2", "gemma"):
    f = out / f"finetune-{key}.json"
    if not f.exists():
        continue
    r = json.loads(f.read_text())
    ratio = r["ours_tokens_per_s"] / r["trainer_tokens_per_s"] if r["trainer_tokens_per_s"] else float("nan")
    print(f"{key}: ours {r['ours_tokens_per_s']:,.0f} tokens/s, Trainer {r['trainer_tokens_per_s'] or 0:,.0f} "
          f"tokens/s ({ratio:.2f}x); held-out BPB {r['initial_bpb']:.4f} -> {r['final_bpb']:.4f} "
          f"in {r['wall_s'] / 60:.2f} min ({r['machine']})")
a = json.loads((out / "align.json").read_text())
print("aligners on", f"{a['pairs']:,} pairs:", ", ".join(f"{k} {v:.2f} s" for k, v in a["seconds"].items()))
PYEOF
echo "results in $OUT ($((SECONDS - start)) s)"
