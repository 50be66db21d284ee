# Moments — every target runs in one project venv (.venv), made once by `make install`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Re-install only when a dependency list or the GPU=0|1 override changes.
GPU ?=
INSTALLED := $(VENV)/.installed$(if $(GPU),-gpu$(GPU))
PROTO_OUT := clients/python
PROTO_SRC := protos/moments/v1/moments.proto
PROTO_GEN := clients/python/moments/v1/moments_pb2.py
# ApertureDB's wire message, for the embedded store's listener (server/moments_server/store/embedded/protocol.py)
STORE_PROTO_OUT := server/moments_server/store/embedded
STORE_PROTO_SRC := protos/aperturedb/queryMessage.proto
STORE_PROTO_GEN := $(STORE_PROTO_OUT)/aperturedb/queryMessage_pb2.py

MODEL ?=
PRETRAINED ?=
CHECKPOINT ?=
MODELS_DIR ?= models
DATA_DIR ?= data
LISTEN ?= 127.0.0.1:50051
WORKERS ?=

.PHONY: install protos export serve test lint bench bench-prepare load fuzz clean

install: $(INSTALLED) $(PROTO_GEN) $(STORE_PROTO_GEN)

# onnxruntime or onnxruntime-gpu (never both): an NVIDIA GPU that answers gets the GPU build; GPU=1|0 decides.
# The other build is removed first, so switching GPU=... reinstalls cleanly (its own stamp file).
$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	flavour=$$(GPU=$(GPU) $(PY) server/moments_server/ort_package.py) || exit 1; \
	other=$$([ "$$flavour" = gpu ] && echo onnxruntime || echo onnxruntime-gpu); \
	if $(PY) -m pip show -q $$other >/dev/null 2>&1; then $(PY) -m pip uninstall -q -y $$other; fi; \
	$(PY) -m pip install -q -e "./clients/python[video,eval]" -e ".[aperturedb,export,dev,$$flavour]"
	rm -f $(VENV)/.installed*
	touch $@

protos: $(PROTO_GEN) $(STORE_PROTO_GEN)

$(PROTO_GEN): $(PROTO_SRC) $(INSTALLED)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--pyi_out=$(PROTO_OUT) $(PROTO_SRC)

$(STORE_PROTO_GEN): $(STORE_PROTO_SRC) $(INSTALLED)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(STORE_PROTO_OUT) --pyi_out=$(STORE_PROTO_OUT) $(STORE_PROTO_SRC)

# make export MODEL=shapes-demo | MODEL=ViT-B-32 PRETRAINED=laion2b_s34b_b79k | CHECKPOINT=path.pt
# With no MODEL: ViT-B-32 with its laion2b_s34b_b79k weights (the tag ViT-B-32 gets unless one is named).
EXPORT_MODEL = $(or $(MODEL),ViT-B-32)
EXPORT_TAG = $(or $(PRETRAINED),$(if $(filter ViT-B-32,$(EXPORT_MODEL)),laion2b_s34b_b79k))
export: install
	$(PY) -m moments_export --model $(EXPORT_MODEL) --models-dir $(MODELS_DIR) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),$(if $(EXPORT_TAG),--pretrained $(EXPORT_TAG)))

serve: install
	$(PY) -m moments_server.launch --models-dir $(MODELS_DIR) --data-dir $(DATA_DIR) --listen $(LISTEN) \
		$(if $(MODEL),--model $(MODEL)) $(if $(PRETRAINED),--pretrained $(PRETRAINED)) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(WORKERS),--workers $(WORKERS))

test: install
	$(PY) -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server export clients/python/moments_client clients/python/moments_shapes
	bash clients/typescript/test.sh lint

BENCH_ARGS ?=
bench: install
	$(PY) -m tests.bench.run $(BENCH_ARGS)

# Builds the benchmark's cached model, videos and stores without measuring (the first run's long part).
bench-prepare: install
	$(PY) -m tests.bench.run --prepare

# 200 searchers + 4 ingest loops for 60 s on loopback (LOAD_ARGS=--quick: 10 s, 20 + 1); tests/bench/results/load-*
LOAD_ARGS ?=
load: install
	$(PY) -m tests.bench.load_run $(LOAD_ARGS)

# Property-based fuzzing with the full budget (>= 10,000 inputs, fresh random ones each run; make test runs
# the same targets with a small fixed budget). FUZZ_SCALE=0.1 runs a tenth of it.
FUZZ_SCALE ?= 1
fuzz: install
	MOMENTS_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) $(PROTO_OUT)/moments/v1/*_pb2*.py* $(STORE_PROTO_OUT)/aperturedb build *.egg-info \
		clients/typescript/node_modules clients/typescript/src/gen clients/python/build
