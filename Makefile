# `make train` and `make test` are the two commands a user needs; both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export WANDB_SILENT := true

.PHONY: train test test-slow benchmark benchmark-gpu clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: these exact versions install from the local wheel cache, others download GBs
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

train: $(VENV)/.installed
	$(PY) train.py --config configs/default.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

benchmark: $(VENV)/.installed
	$(PY) benchmarks/overhead.py --data-root data

# on a CUDA machine: framework overhead, mapping speed and memory, segmentation throughput (docs/results/foundation.md)
benchmark-gpu: $(VENV)/.installed
	$(PY) benchmarks/overhead.py --data-root data --device cuda
	$(PY) benchmarks/mapping_resnet18.py --cuda --batch 128 --steps 20 --task-only
	$(PY) benchmarks/mapping_memory.py --cuda
	$(PY) benchmarks/segmentation.py --device cuda

clean:
	rm -rf runs wandb .pytest_cache
