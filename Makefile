# The course's commands. Everything runs from the repository's own .venv, created on first use.
#   make lab      install (first time) and open the lessons in JupyterLab
#   make test     install (first time) and run the whole test suite (what CI runs)
#   make check LESSON=01_intro_to_rnns   check your own notebook in lessons/ (LESSON=01 works)
#   make test-quick  unit tests and the checks only (no notebook runs, grading or browser)
# Instructors: make release | autograde | feedback | export | images   (see docs/instructors.md)
#   with nbgrader's exchange: make release-assignments | collect | autograde | feedback |
#   release-feedback; a big class: autograde ARGS="--shard K/N" | merge-grades | similarity
#   a class on a real JupyterHub on this machine: sudo make hub   (needs node and npm)

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# nbgrader calls alembic by name, so the venv's bin/ must come first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"
LESSON ?=
ARGS ?=
LINTED := helpers tests benchmarks images deploy
# Jupyter refuses to start as root without --allow-root (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lab test test-quick test-grading lint check release autograde feedback export images bench checkpoint \
	similarity merge-grades bench-grading clean-grading help hub hub-proxy

help:
	@sed -n '1,10p' Makefile

install: $(STAMP)

# Re-runs only when the lock file or the package definition changes (a fast no-op otherwise).
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

lab: $(STAMP)
	$(RUN) $(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=lessons $(ROOT_FLAG) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# The graded corpora run in make test-grading, to keep make test in budget: the verdict corpus
# (tests/test_verdicts.py: make check vs make autograde on 24 graded notebooks, about 3 minutes
# of 2 cores), the hostile corpus (tests/test_hostile_grading.py, 79 submissions graded
# twice, and tests/test_grading_bounds.py: about 10 minutes), a class graded killed, resumed
# and in shards, then merged (tests/test_grading_resume.py, tests/test_merge.py: about 5
# minutes), and the exchange cycle from the command line (tests/test_exchange.py; tests/test_hub.py
# runs it through JupyterHub in make test).
test: $(STAMP) lint
	$(RUN) COURSE_FAST=1 $(BIN)/python -m pytest -n auto --dist loadfile --timeout=900 -m "not corpus" \
		$(ARGS)

# The edit-test loop: unit tests and the checks, without executing notebooks, grading or a browser.
QUICK := -m "not slow"
test-quick: $(STAMP)
	$(RUN) COURSE_FAST=1 $(BIN)/python -m pytest -n 2 $(QUICK) -q $(ARGS)

# Only the grading tests: the hostile-submission corpus (tests/hostile/) and hostile folders, a
# class killed, sharded and merged, the exchange cycle and the verdict corpus (make check vs make
# autograde).
test-grading: $(STAMP)
	$(RUN) COURSE_FAST=1 $(BIN)/python -m pytest tests/test_hostile_grading.py \
		tests/test_grading_bounds.py tests/test_grading_resume.py tests/test_merge.py \
		tests/test_exchange.py tests/test_verdicts.py --timeout=3600 $(ARGS)

check: $(STAMP)
	@test -n "$(LESSON)" || { echo "usage: make check LESSON=01_intro_to_rnns"; exit 2; }
	$(RUN) COURSE_FAST=1 $(BIN)/python -m helpers.checks $(LESSON) $(ARGS)

release: $(STAMP)
	$(RUN) $(BIN)/nbgrader generate_assignment '*' --no-db --force --log-level=WARN

autograde: $(STAMP)
	$(RUN) COURSE_FAST=1 $(BIN)/python -m helpers.grading autograde $(ARGS)

feedback: $(STAMP)
	$(RUN) $(BIN)/python -m helpers.grading feedback

export: $(STAMP)
	$(RUN) $(BIN)/python -m helpers.grading export $(ARGS)

# nbgrader's exchange (JupyterHub): hand lessons out, collect submissions, hand feedback back.
release-assignments: $(STAMP)
	$(RUN) $(BIN)/python -m helpers.grading release-assignments $(ARGS)

collect: $(STAMP)
	$(RUN) $(BIN)/python -m helpers.grading collect $(ARGS)

release-feedback: $(STAMP)
	$(RUN) $(BIN)/python -m helpers.grading release-feedback $(ARGS)

# Pairs of students whose answers to an exercise are most alike (copydetect), scaffold ignored.
similarity: $(STAMP)
	@test -n "$(LESSON)" || { echo "usage: make similarity LESSON=01_intro_to_rnns"; exit 2; }
	$(RUN) $(BIN)/python -m helpers.grading.similarity $(LESSON) $(ARGS)

# Merge `make autograde ARGS="--shard K/N"` runs (grading/shards/) into the course's gradebook.
merge-grades: $(STAMP)
	$(RUN) $(BIN)/python -m helpers.grading.merge $(ARGS)

images: $(STAMP)
	cd images && for script in draw_*.py; do ../$(BIN)/python $$script || exit 1; done

# Lesson 04's benchmark: trains the lesson's char-LSTM for a wall-clock budget and prints its
# validation loss (last line: JSON). Defaults: Tiny Shakespeare, 180 s. Another run, e.g.
#   make bench ARGS="--corpus anna --budget-seconds 600"
bench: $(STAMP)
	$(RUN) $(BIN)/python benchmarks/char_lstm.py $(ARGS)

# Grading a synthetic class three ways in one run: plain nbgrader, make autograde at --jobs 1
# and 2 (seconds per notebook, ratios, peak memory; last line JSON). Another run, e.g.
#   make bench-grading ARGS="--students 12 --lesson 01 --jobs 1 2 3"
bench-grading: $(STAMP)
	$(RUN) $(BIN)/python benchmarks/grading.py $(ARGS)

# The checkpoint shipped with lesson 04 (seeded, a fixed number of steps; a few minutes on 2
# CPU cores). Run `make release` afterwards so lessons/04_char_lstm/ gets the new file.
CHECKPOINT_STEPS ?= 5000
checkpoint: $(STAMP)
	$(RUN) $(BIN)/python benchmarks/char_lstm.py --corpus tinyshakespeare --seed 0 \
		--max-steps $(CHECKPOINT_STEPS) --half --no-progress --precision fp32 \
		--save solutions/04_char_lstm/char_lstm_tinyshakespeare.pt $(ARGS)

clean-grading:
	rm -rf grading

# A real JupyterHub for a class on this machine (as root): configurable-http-proxy from npm into
# .hub/proxy, Linux accounts with passwords, nbgrader's exchange, the instructor's copy of the
# course, then the hub on 127.0.0.1 (deploy/hub/hub.py; ARGS="--port 8000 --students a,b,c").
hub: $(STAMP)
	$(RUN) $(BIN)/python deploy/hub/hub.py $(ARGS)

# Only the proxy (deploy/hub/package-lock.json, npm ci): what tests/test_hub.py needs.
hub-proxy: $(STAMP)
	$(RUN) $(BIN)/python deploy/hub/hub.py --install-proxy
