# The course's commands. Everything runs from the repository's own .venv, created on first use.
#   make lab      install (first time) and open the lessons in JupyterLab
#   make test     install (first time) and run the whole test suite (what CI runs)
#   make check LESSON=01   check your own notebook in lessons/ (a lesson id or its prefix)
#   make test-quick  unit tests and the checks only (no notebook runs, grading or browser)
# Instructors: make release | autograde | feedback | export | images   (see docs/instructors.md)
#   with nbgrader's exchange: make release-assignments | collect | autograde | feedback |
#   release-feedback; a big class: autograde ARGS="--shard K/N" | merge-grades | similarity
#   a class on a real JupyterHub on this machine: sudo make hub   (needs node and npm)

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# One install per role, each from its lock in requirements/ (make lock regenerates the three from
# pyproject.toml): the learner's (make lab, make check), the instructor's (release, grading, the
# hub; the learner's and more) and the developer's (tests, lint; everything).
LEARNER := $(VENV)/.installed-learner
INSTRUCTOR := $(VENV)/.installed-instructor
DEV := $(VENV)/.installed-dev
INCLUDES_dev := instructor learner
INCLUDES_instructor := learner
# nbgrader calls alembic by name, so the venv's bin/ must come first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"
LESSON ?=
ARGS ?=
LINTED := helpers tests benchmarks images deploy
# Jupyter refuses to start as root without --allow-root (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install lock lab test test-quick test-grading lint check release autograde feedback export images bench checkpoint \
	similarity merge-grades bench-grading clean-grading help hub hub-proxy

help:
	@sed -n '1,10p' Makefile

install: $(DEV)

# Re-runs only when the role's lock or the package definition changes (a fast no-op otherwise).
$(VENV)/.installed-%: requirements/%.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/$*.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@ $(foreach role,$(INCLUDES_$*),$(VENV)/.installed-$(role))

# The three locks, generated from pyproject.toml's dependencies and extras (never edited by hand):
# dev first, then the other two constrained to its versions, so every role runs the same ones.
# A local build label (torch's "+cpu") is dropped: the lock installs from PyPI or PyTorch's
# CPU index alike, and the course package itself (an extra naming another) is left out.
# ARGS="--upgrade" moves every pin to the newest release.
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" ../$(BIN)/pip-compile --quiet --strip-extras \
	--no-emit-index-url --no-emit-find-links --unsafe-package rnn-course-helpers $(ARGS)
lock: $(DEV)
	cd requirements && $(PIP_COMPILE) --extra dev -o dev.txt ../pyproject.toml
	cd requirements && $(PIP_COMPILE) --extra instructor -c dev.txt -o instructor.txt ../pyproject.toml
	cd requirements && $(PIP_COMPILE) --extra lab -c dev.txt -o learner.txt ../pyproject.toml
	sed -i 's/^\(torch==[0-9.]*\)+[a-z0-9]*$$/\1/' requirements/*.txt

lab: $(LEARNER)
	$(RUN) $(BIN)/jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=lessons $(ROOT_FLAG) $(ARGS)

lint: $(DEV)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# The graded corpora run in make test-grading, to keep make test in budget: the verdict corpus
# (tests/test_verdicts.py: make check vs make autograde on 24 graded notebooks, about 3 minutes
# of 2 cores), the hostile corpus (tests/test_hostile_grading.py, 79 submissions graded
# twice, and tests/test_grading_bounds.py: about 10 minutes), a class graded killed, resumed
# and in shards, then merged (tests/test_grading_resume.py, tests/test_merge.py: about 5
# minutes), and the exchange cycle from the command line (tests/test_exchange.py; tests/test_hub.py
# runs it through JupyterHub in make test).
test: $(DEV) lint
	$(RUN) COURSE_FAST=1 $(BIN)/python -m pytest -n auto --dist loadfile --timeout=900 -m "not corpus" \
		$(ARGS)

# The edit-test loop: unit tests and the checks, without executing notebooks, grading or a browser.
QUICK := -m "not slow"
test-quick: $(DEV)
	$(RUN) COURSE_FAST=1 $(BIN)/python -m pytest -n 2 $(QUICK) -q $(ARGS)

# Only the grading tests: the hostile-submission corpus (tests/support/hostile/) and hostile folders, a
# class killed, sharded and merged, the exchange cycle and the verdict corpus (make check vs make
# autograde); and every lesson run outside the checkout, from a wheel (tests/test_outside.py).
test-grading: $(DEV)
	$(RUN) COURSE_FAST=1 $(BIN)/python -m pytest tests/test_hostile_grading.py \
		tests/test_grading_bounds.py tests/test_grading_resume.py tests/test_merge.py \
		tests/test_exchange.py tests/test_verdicts.py tests/test_outside.py --timeout=3600 $(ARGS)

check: $(LEARNER)
	@test -n "$(LESSON)" || { echo "usage: make check LESSON=01 (a lesson id or its prefix)"; exit 2; }
	$(RUN) COURSE_FAST=1 $(BIN)/python -m helpers.checks $(LESSON) $(ARGS)

# Each lesson's set-up cell and Colab links, and the README's lessons table, from the manifest
# (helpers/publish.py), then nbgrader writes lessons/ from solutions/.
release: $(INSTRUCTOR)
	$(BIN)/python -m helpers.publish
	$(RUN) $(BIN)/nbgrader generate_assignment '*' --no-db --force --log-level=WARN

autograde: $(INSTRUCTOR)
	$(RUN) COURSE_FAST=1 $(BIN)/python -m helpers.grading autograde $(ARGS)

feedback: $(INSTRUCTOR)
	$(RUN) $(BIN)/python -m helpers.grading feedback

export: $(INSTRUCTOR)
	$(RUN) $(BIN)/python -m helpers.grading export $(ARGS)

# nbgrader's exchange (JupyterHub): hand lessons out, collect submissions, hand feedback back.
release-assignments: $(INSTRUCTOR)
	$(RUN) $(BIN)/python -m helpers.grading release-assignments $(ARGS)

collect: $(INSTRUCTOR)
	$(RUN) $(BIN)/python -m helpers.grading collect $(ARGS)

release-feedback: $(INSTRUCTOR)
	$(RUN) $(BIN)/python -m helpers.grading release-feedback $(ARGS)

# Pairs of students whose answers to an exercise are most alike (copydetect), scaffold ignored.
similarity: $(INSTRUCTOR)
	@test -n "$(LESSON)" || { echo "usage: make similarity LESSON=01 (a lesson id or its prefix)"; exit 2; }
	$(RUN) $(BIN)/python -m helpers.grading.similarity $(LESSON) $(ARGS)

# Merge `make autograde ARGS="--shard K/N"` runs (grading/shards/) into the course's gradebook.
merge-grades: $(INSTRUCTOR)
	$(RUN) $(BIN)/python -m helpers.grading.merge $(ARGS)

images: $(LEARNER)
	cd images && for script in draw_*.py; do ../$(BIN)/python $$script || exit 1; done

# Lesson 04's benchmark: trains the lesson's char-LSTM for a wall-clock budget and prints its
# validation loss (last line: JSON). Defaults: Tiny Shakespeare, 180 s. Another run, e.g.
#   make bench ARGS="--corpus anna --budget-seconds 600"
bench: $(LEARNER)
	$(RUN) $(BIN)/python benchmarks/char_lstm.py $(ARGS)

# Grading a synthetic class three ways in one run: plain nbgrader, make autograde at --jobs 1
# and 2 (seconds per notebook, ratios, peak memory; last line JSON). Another run, e.g.
#   make bench-grading ARGS="--students 12 --lesson 01 --jobs 1 2 3"
bench-grading: $(INSTRUCTOR)
	$(RUN) $(BIN)/python benchmarks/grading.py $(ARGS)

# The checkpoint lesson 04 loads, shipped in the course package (seeded, a fixed number of steps;
# a few minutes on 2 CPU cores).
CHECKPOINT_STEPS ?= 5000
checkpoint: $(LEARNER)
	$(RUN) $(BIN)/python benchmarks/char_lstm.py --corpus tinyshakespeare --seed 0 \
		--max-steps $(CHECKPOINT_STEPS) --half --no-progress --precision fp32 \
		--save helpers/data/char_lstm_tinyshakespeare.pt $(ARGS)

clean-grading:
	rm -rf grading

# A real JupyterHub for a class on this machine (as root): configurable-http-proxy from npm into
# .hub/proxy, Linux accounts with passwords, nbgrader's exchange, the instructor's copy of the
# course, then the hub on 127.0.0.1 (deploy/hub/hub.py; ARGS="--port 8000 --students a,b,c").
hub: $(INSTRUCTOR)
	$(RUN) $(BIN)/python deploy/hub/hub.py $(ARGS)

# Only the proxy (deploy/hub/package-lock.json, npm ci): what tests/test_hub.py needs.
hub-proxy: $(INSTRUCTOR)
	$(RUN) $(BIN)/python deploy/hub/hub.py --install-proxy
