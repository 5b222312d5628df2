#!/usr/bin/env bash
# The prepared GPU run (issue 20): the figures only a GPU gives, in one script, first thing on a lent machine.
#   1. fine-tune throughput: our loop against a plain transformers.Trainer, same settings, same process
#      (benchmarks/finetune.py), on SmolLM2-135M and on Gemma 3 270M adapted to Spanish;
#   2. the held-out bits-per-byte-vs-minutes curve of both (the same runs, evaluated every --eval-every steps);
#   3. the torch aligner on the GPU against fast_align (CPU) on the demo corpus, same token ids (benchmarks/align_speed.py).
# Results: one JSON per part in $OUT (default demo-output/gpu), and the printed tables.
# `bash benchmarks/gpu.sh --tiny` runs every part with tiny settings on the CPU in a few minutes (CI, so it cannot rot).
# Budget on one H200: about 8 minutes (adapting each model ~1 min, 600 + 600 fine-tuning steps, 60 Trainer steps each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-demo-output/gpu}
if [[ "${1:-}" == "--tiny" ]]; then
  VOCAB=1000 LINES=1500 STEPS=4 TRAINER=4 EVAL=2 EVAL_BYTES=2000 ALIGN_LINES=500 OUT=${OUT}-tiny
else
  VOCAB=16000 LINES=30423 STEPS=600 TRAINER=60 EVAL=100 EVAL_BYTES=30000 ALIGN_LINES=30423
fi
mkdir -p "$OUT"
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
    --trainer-steps "$TRAINER" --eval-every "$EVAL" --eval-max-bytes "$EVAL_BYTES" --json "$OUT/finetune-$key.json"
done
echo "== aligners: torch (GPU if any) vs fast_align"
"$PY" benchmarks/align_speed.py --lines "$ALIGN_LINES" --tokenizer "$OUT/smollm2/model" --json "$OUT/align.json"
echo "results in $OUT"
