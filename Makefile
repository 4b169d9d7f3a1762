# Two entry points (see README): `make demo` replays the bundled sample drive with the bundled model,
# `make test` runs the test suite. Both create or reuse the virtual environment in $(VENV).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= out/demo

.PHONY: demo test lint venv cpp replay-demo bench-bridge bench-default-model gpu-check protos bench-sensorsim bench-fleet

$(VENV)/.runtime-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.dev-installed

demo: $(VENV)/.runtime-installed
	$(VENV)/bin/simharmon replay simharmon/data/sample_drive --out $(DEMO_OUT) --overwrite

test: $(VENV)/.dev-installed
	$(PY) -m pytest

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check simharmon tests benchmarks examples

replay-demo: $(VENV)/.runtime-installed
	$(VENV)/bin/simharmon replay simharmon/data/sample_drive --out out/replay-demo --config tiny   # random weights: the pipeline alone

bench-default-model: $(VENV)/.runtime-installed
	$(PY) benchmarks/default_model.py

cpp:
	cmake -S bindings/cpp -B build/cpp && cmake --build build/cpp -j

bench-bridge: $(VENV)/.runtime-installed
	$(PY) benchmarks/bridge.py

# The one GPU command (README "GPU check"): tests, kernel and fps benchmarks -> one JSON + log.
# Runs with the machine's python3 (torch preinstalled) unless $(VENV) exists; ARGS=--quick for <= 4 min.
GPU_PY ?= $(shell test -x $(PY) && echo $(PY) || echo $(PYTHON))
gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py $(ARGS)

# The SensorsimService's generated code (committed; tests/sensorsim checks it is current). Needs grpcio-tools.
protos:
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
		simharmon/sensorsim/protos/common.proto simharmon/sensorsim/protos/sensorsim.proto
	rm -f simharmon/sensorsim/protos/common_pb2_grpc.py

bench-sensorsim: $(VENV)/.runtime-installed
	$(PY) benchmarks/sensorsim_proxy.py

bench-fleet: $(VENV)/.dev-installed
	$(PY) benchmarks/fleet.py
