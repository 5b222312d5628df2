#!/usr/bin/env bash
# Builds llama-cpp-python (the version installed here) once with ggml's float16 GELU table switched off, into
# demo-output/llama-cpp-exact-gelu/, and runs benchmarks/gemma_parity.py with it: the F32 parity of an adapted Gemma
# without llama.cpp's own GELU rounding. Needs the package index (pip download) and ~8 min of 2 cores for the build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=demo-output/llama-cpp-exact-gelu
if [ ! -d "$OUT/llama_cpp" ]; then
  version=$($PY -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
  work=$(mktemp -d)
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
  tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  vec=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp/ggml/src/ggml-cpu/vec.h)
  grep -q '^#define GGML_GELU_FP16$' "$vec"
  sed -i 's|^#define GGML_GELU_FP16$|// GGML_GELU_FP16 off: exact GELU|' "$vec"
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" $PY -m pip install -q --no-deps --target "$OUT" "$work"/llama_cpp_python-*/
  rm -rf "$work"
fi
PYTHONPATH="$OUT" $PY benchmarks/gemma_parity.py "$@"
