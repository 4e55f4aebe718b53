"""The grader's settings are declared once (helpers/grading/settings.py, sandbox.Limits): the
command line, the environment variables and the executor's defaults all come from there."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields

import pytest
from conftest import ROOT

from helpers.grading import sandbox, settings
from helpers.grading.settings import Settings


def _parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, environ or {})
    return settings.from_arguments(parser.parse_args(argv))


def test_defaults_are_the_declarations():
    assert _parse([]) == Settings()
    assert Settings().limits == sandbox.Limits()


def test_every_flag_reaches_its_setting():
    chosen = _parse(
        [
            "--timeout=30",
            "--timeout=04_char_lstm=90",
            "--sandbox=rlimits",
            "--memory-mb=2048",
            "--cpu-s=60",
            "--file-mb=8",
            "--processes=16",
            "--tmp-mb=64",
            "--max-notebook-mb=5",
            "--max-files-mb=2",
            "--jobs=3",
            "--max-outputs=7",
            "--max-output-kb=9",
            "--max-notebook-output-kb=11",
            "--notebook-timeout=01_intro_to_rnns=300",
        ]
    )
    assert chosen == Settings(
        timeout=30,
        lesson_timeouts={"04_char_lstm": 90},
        mode="rlimits",
        limits=sandbox.Limits(memory_mb=2048, cpu_s=60, file_mb=8, processes=16, tmp_mb=64),
        max_notebook_mb=5,
        max_files_mb=2,
        jobs=3,
        max_outputs=7,
        max_output_kb=9,
        max_notebook_output_kb=11,
        notebook_timeout=None,
        lesson_notebook_timeouts={"01_intro_to_rnns": 300},
    )
    assert chosen.cell_timeout("04_char_lstm") == 90 and chosen.cell_timeout("x") == 30
    assert chosen.notebook_seconds("01_intro_to_rnns") == 300
    assert chosen.workers() == 3


def test_environment_variables_set_defaults_and_flags_win():
    environ = {
        "COURSE_SANDBOX": "off",
        "COURSE_GRADING_MEMORY_MB": "1024",
        "COURSE_GRADING_MAX_OUTPUTS": "12",
        "COURSE_GRADING_TIMEOUT": "20,03_time_series_rnn=40",
    }
    chosen = _parse([], environ)
    assert chosen.mode == "off" and chosen.limits.memory_mb == 1024 and chosen.max_outputs == 12
    assert chosen.timeout == 20 and chosen.lesson_timeouts == {"03_time_series_rnn": 40}
    assert _parse(["--max-outputs=3"], environ).max_outputs == 3
    with pytest.raises(ValueError, match="COURSE_GRADING_JOBS: expected a whole number"):
        _parse([], {"COURSE_GRADING_JOBS": "two"})
    with pytest.raises(ValueError, match="--timeout takes SECONDS or LESSON=SECONDS"):
        _parse(["--timeout=soon"])


def test_every_setting_has_a_flag_but_the_tables_and_open_files():
    flagged = {f.name for f in settings.options()}
    declared = {f.name for f in fields(Settings)} | {f.name for f in fields(sandbox.Limits)}
    assert declared - flagged == {
        "lesson_timeouts",
        "lesson_notebook_timeouts",
        "limits",
        "open_files",
    }


def test_the_executor_and_the_command_line_share_the_defaults():
    code = (
        "from helpers.grading.execute import HardenedExecute as H; e = H();"
        "print(e.max_outputs, e.max_output_bytes, e.max_notebook_output_bytes, e.notebook_timeout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    defaults = Settings()
    assert list(map(int, out)) == [
        defaults.max_outputs,
        defaults.max_output_kb * 1000,
        defaults.max_notebook_output_kb * 1000,
        settings.NOTEBOOK_TIMEOUT,
    ]
    help_text = subprocess.run(
        [sys.executable, "-m", "helpers.grading", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for f in settings.options():
        assert settings.flag(f) in help_text and f"${settings.variable(f)}" in help_text
