# Everything from a fresh clone, on a machine with Python >= 3.10 and a C++ compiler
# (nvcc too, for the CUDA library). Each target sets up what it needs in .venv.
#
#   make bench   the comparison benchmark (the GPU when there is one, else the CPU): a table,
#                bench/results/latest.json and a plot beside it
#   make test    the test suite, once with the native kernels, once with the pure-torch fallback
#   make wheel   an abi3 wheel in dist/
#
# FUSEDOPT_TORCH picks the torch to install (default: torch>=2.10, which pip
# resolves to the newest release, as a new user gets it), e.g.
#   FUSEDOPT_TORCH="torch==2.13.0" make test

PYTHON ?= python3
VENV ?= .venv
FUSEDOPT_TORCH ?= torch>=2.10
PY := $(VENV)/bin/python
SOURCES := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)

.PHONY: all build test bench sanitize wheel clean

all: build

# torch and the build tools: once per venv
$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(FUSEDOPT_TORCH)" "setuptools>=77" wheel
	touch $@

# the native libraries, rebuilt when a source changes; --no-build-isolation so
# they compile against the torch in this venv (see README, "Building")
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test,bench,peers]"
	touch $@

build: $(VENV)/.built

# Files whose checks never go through fusedopt's backends, so the fallback pass
# would only repeat them: the math headers against their plain-torch twins and
# libm, the build checks, the C plan checks against their Python twins, and the
# benchmark harness's own checks (the fallback's benchmark rows run in both passes).
NOT_BACKEND := test_fma_emulation.py test_quant8.py test_stochastic_rounding.py test_cuda_build.py \
	test_lowmem_math_cuda_build.py test_bulk.py test_bench_fallback_rows.py test_bench_lowmem_quality.py

# second pass: the pure-torch fallback; the slow build checks (wheel, ISA paths), the CUDA
# kernels under the CPU emulation (tests/cuda_emu) and NOT_BACKEND, which need no fallback,
# ran in the first
test: build
	$(PY) -m fusedopt info
	FUSEDOPT_DISABLE_NATIVE= $(PY) -m pytest -q tests
	FUSEDOPT_DISABLE_NATIVE=1 $(PY) -m pytest -q -m "not slow and not cuda_emulated" \
		$(addprefix --ignore=tests/,$(NOT_BACKEND)) tests

bench: build
	$(PY) -m fusedopt bench --out bench/results/latest.json

# GPU only: compute-sanitizer over a small step through every CUDA kernel, checked
# against the CPU kernels. The caching allocator is off: inside one of its
# segments an out-of-bounds access would land in a neighbouring tensor, unseen.
sanitize: build
	PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 $(PY) tests/native/sanitize_step.py
	PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool racecheck --error-exitcode 1 $(PY) tests/native/sanitize_step.py

# one cp310-abi3 manylinux_2_28 wheel with both libraries (FUSEDOPT_CUDA=0: CPU only;
# TORCH_CUDA_ARCH_LIST overrides the default sm_80, sm_90 + PTX)
wheel: $(VENV)/.deps
	$(PY) -m pip wheel --no-build-isolation --no-deps --wheel-dir dist .
	@ls -1 dist/fusedopt-*.whl

clean:
	rm -rf build dist *.egg-info fusedopt/*.so fusedopt/_build_info.json
