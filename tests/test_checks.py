"""Every exercise check passes on the reference solution and fails on the unsolved release."""

from __future__ import annotations

import sys

import pytest
from conftest import lesson_ids, loaded, notebook_path

from helpers.checks import CheckFailure, exercises

CASES = [(lesson, name) for lesson in lesson_ids() for name in exercises(lesson)]


@pytest.mark.parametrize(("lesson", "exercise"), CASES)
def test_solution_passes(lesson, exercise):
    ns = loaded(notebook_path("source", lesson))
    assert not ns.errors, f"solution notebook raised while loading: {ns.errors}"
    exercises(lesson)[exercise](ns)


@pytest.mark.parametrize(("lesson", "exercise"), CASES)
def test_release_fails(lesson, exercise):
    ns = loaded(notebook_path("release", lesson))
    with pytest.raises(CheckFailure) as failure:
        exercises(lesson)[exercise](ns)
    # The message names the exercise, or the answer it asks for, and says what to do about it.
    message = str(failure.value)
    named = message.split(":", 1)[0].split("(", 1)[0].strip()
    if named != exercise:  # one of the exercise's answers, by the name the learner gives it
        assert f"`{named}` is not defined. Run the cell that defines it" in message, message
    assert any(
        reason in message
        for reason in ("not implemented yet", "is not defined", "does not pass its own check yet")
    ), message


def test_every_lesson_has_checks():
    for lesson in lesson_ids():
        assert exercises(lesson), f"{lesson} has no exercises registered"


# ----------------------------------------------------------------------------------------------
# The check machinery on its own (no kernel): return-value tricks must fail.


def _rnn_case():
    import torch

    from helpers.checks.lesson01 import _rnn_case as case

    ref, x, h, params = case(3, 4, 5, 0)
    with torch.no_grad():
        expected = ref(x, h)
    return x, h, params, expected


def test_checks_reject_look_alikes():
    import torch

    from helpers.checks import CheckFailure, core

    x, h, params, expected = _rnn_case()

    class AlwaysEqual:
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

    class Sneaky(torch.Tensor):
        def __eq__(self, other):
            return torch.ones_like(other, dtype=torch.bool)

    for fake in (AlwaysEqual(), expected.numpy(), expected.float(), Sneaky(expected + 1)):
        with pytest.raises(CheckFailure):
            core.assert_close("rnn_cell", fake, expected)
    with pytest.raises(CheckFailure, match="nan"):
        core.assert_close("rnn_cell", expected * float("nan"), expected)

    class Tup(tuple):
        def __eq__(self, other):
            return True

        __hash__ = tuple.__hash__

    class Str(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    with pytest.raises(CheckFailure):
        core.assert_equal_values("shape", Tup((9, 9)), (1, 3, 20))
    with pytest.raises(CheckFailure):
        core.assert_choice("answer", Str("x"), ("vanishes", "explodes"))
    assert core.assert_choice("answer", "vanishes", ("vanishes", "explodes")) == "vanishes"


def test_checks_work_on_clones_and_notice_mutation():
    from helpers.checks import CheckFailure, core

    x, h, params, _ = _rnn_case()
    before = h.clone()

    def mutating(x, h, *params):
        h.mul_(0)
        return h

    with pytest.raises(CheckFailure, match="in place"):
        core.call("rnn_cell", mutating, x, h, *params)
    assert (h == before).all(), "the check's own tensors were changed"


def test_checks_refuse_patched_libraries(monkeypatch):
    import numpy as np
    import torch

    from helpers.checks import CheckFailure, core

    x, h, params, expected = _rnn_case()

    def cell(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)

    assert (
        core.assert_close("rnn_cell", core.call("rnn_cell", cell, x, h, *params), expected) < 1e-9
    )
    for owner, name, fake in (
        (torch, "allclose", lambda *a, **k: True),
        (np, "allclose", lambda *a, **k: True),
        (torch.Tensor, "__eq__", lambda *a, **k: True),
        (torch.nn.RNNCell, "forward", lambda self, *a: a[0]),
        (torch, "allclose", torch.isclose),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, fake)
            with pytest.raises(CheckFailure, match="replaced"):
                core.call("rnn_cell", cell, x, h, *params)
    # the comparison itself reads tensors through TensorBase, whatever torch.Tensor says
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "numpy", lambda self, *a, **k: np.zeros(1))
        with pytest.raises(CheckFailure):
            core.assert_close("rnn_cell", expected + 1, expected)


def test_warnings_from_learner_code_are_notes(capsys):
    import warnings

    from helpers.checks import core

    x, h, params, _ = _rnn_case()

    def noisy(x, *args):
        warnings.warn("harmless", UserWarning, stacklevel=1)
        print("to stderr", file=sys.stderr)
        return x

    core.call("rnn_cell", noisy, x, h, *params)
    out, err = capsys.readouterr()
    assert err == ""
    assert "no points lost" in out and "harmless" in out
