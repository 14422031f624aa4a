# The README's two commands. Each sets everything up from nothing: a venv with the CUDA 12
# wheels (no CUDA toolkit needed), the package built into it, and Debian's libgtest-dev.
#   make demo   run the main example
#   make test   run every test: GoogleTest (ctest) and pytest

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CPP_BUILD := build/cpp
GTEST_CONFIG := /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake
DEPS_STAMP := $(VENV)/.knetcnn-deps

# Build requirements, runtime requirements and what the tests and examples use.
DEPS := scikit-build-core pybind11 cmake ninja \
        "nvidia-cudnn-cu12>=9,<10" "nvidia-cuda-runtime-cu12>=12,<13" "nvidia-cuda-nvcc-cu12>=12,<13" \
        "cuda-python>=12.6,<13" numpy ml_dtypes pytest hypothesis tqdm scikit-learn matplotlib

.PHONY: demo test test-cpp test-python test-sanitize fuzz install deps gtest-dev bench clean

demo: install
	$(PY) -m knetcnn info
	$(PY) examples/lenet_digits.py

test: install test-cpp test-python

$(DEPS_STAMP): Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(DEPS)
	touch $@

deps: $(DEPS_STAMP)

# Reinstalled every time: scikit-build-core keeps its build tree, so this is incremental.
install: $(DEPS_STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps .

gtest-dev:
	@if [ ! -f $(GTEST_CONFIG) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libgtest-dev with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgtest-dev >/dev/null; \
	  else \
	    echo "GoogleTest is missing: run 'sudo apt-get install libgtest-dev' (Debian/Ubuntu) and retry"; exit 1; \
	  fi; \
	fi

test-cpp: $(DEPS_STAMP) gtest-dev
	$(VENV)/bin/cmake -S . -B $(CPP_BUILD) -G Ninja -DBUILD_TESTING=ON -DKNETCNN_BUILD_PYTHON=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
	$(VENV)/bin/cmake --build $(CPP_BUILD)
	$(VENV)/bin/ctest --test-dir $(CPP_BUILD) --output-on-failure -j2
	@echo "gtest cases skipped, by reason:"
	@$(CPP_BUILD)/knetcnn_tests --gtest_brief=1 2>/dev/null | grep -A1 ': Skipped$$' | grep -vE -- '^--$$|: Skipped$$' | sort | uniq -c || true

# The C++ core and its gtest suite under ASan + UBSan; LeakSanitizer (part of ASan) reports any
# descriptor or buffer the host-side paths fail to release.
test-sanitize: $(DEPS_STAMP) gtest-dev
	$(VENV)/bin/cmake -S . -B build/sanitize -G Ninja -DBUILD_TESTING=ON -DKNETCNN_BUILD_PYTHON=OFF \
	  -DKNETCNN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
	$(VENV)/bin/cmake --build build/sanitize
	@# ASan intercepts dlopen, so cuDNN's loader no longer resolves its sub-libraries through its own
	@# $$ORIGIN RUNPATH: point the loader at the wheel's lib folder explicitly.
	LD_LIBRARY_PATH="$$($(PY) -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))')" \
	ASAN_OPTIONS=detect_leaks=1:protect_shadow_gap=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  build/sanitize/knetcnn_tests --gtest_brief=1

test-python: install
	$(PY) -m pytest tests/python -q -rs

# The long fuzzing profile (make test runs the bounded one).
fuzz: install
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/python/test_fuzz.py -q -s -p no:cacheprovider

bench: install
	$(PY) bench/cpu.py

clean:
	rm -rf build $(VENV) .pytest_cache
