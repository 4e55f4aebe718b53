"""The engine that runs a lesson's declared exercises.

A lesson declares, for each exercise, its cases (named records: ``CellSize(batch=3,
input_size=4, hidden_size=5)``, never bare tuples), its reference (PyTorch, autograd or
counting), and its known mistakes: a list of :class:`Mistake` (a name, how to recognise it, what
to tell the learner). This module turns those declarations into what the checks need:

- :class:`Exercise` and :func:`exercise_table`: the case table the notebook's test cells, the
  hidden tests and ``make check`` all read; prerequisites are linked when the table is built.
- :func:`causes`: the declared mistakes, evaluated on one case, as the ``causes`` that
  :func:`helpers.checks.core.assert_close` names when a wrong answer matches one.
- :func:`diagnosis`: for checks by properties, the first mistake whose test the answer meets.
- :func:`checked`: ``assert_close``, evaluating the (often slow) mistakes only when it fails.
- :func:`records`: the rows of a case set, whatever tuples they were given as, as named records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from helpers.checks.core import Cause, CheckFailure, after, assert_close, get

VISIBLE = "visible"
HIDDEN = "hidden"
CASE_SETS = (VISIBLE, HIDDEN)


# ----------------------------------------------------------------------------------------------
# Known mistakes


@dataclass(frozen=True)
class Mistake:
    """A known mistake: ``name`` (for maintainers), ``recognise``, and ``tell``: what the learner
    reads when their answer shows it.

    For checks against a reference (:func:`causes`), ``recognise(*case)`` is the wrong answer
    the mistake gives on a case (``None`` where it cannot happen there); for checks by
    properties (:func:`diagnosis`), it is true when the learner's answer shows the mistake.
    """

    name: str
    recognise: Callable[..., object]
    tell: str | Callable[..., str]


def causes(mistakes: Iterable[Mistake], *case) -> list[Cause]:
    """The ``mistakes`` that can happen on ``case``, as ``Cause(tell, wrong answer)``, in order."""
    found = []
    for mistake in mistakes:
        output = mistake.recognise(*case)
        if output is not None:
            found.append(Cause(_told(mistake, case), output))
    return found


def _told(mistake: Mistake, case) -> str:
    return mistake.tell(*case) if callable(mistake.tell) else mistake.tell


def diagnosis(mistakes: Iterable[Mistake], *case) -> str | None:
    """For checks by properties: the ``tell`` of the first of ``mistakes`` whose
    ``recognise(*case)`` is true (the answer shows that mistake), or ``None``. A ``tell`` that
    depends on the case is a function of it."""
    for mistake in mistakes:
        if mistake.recognise(*case):
            return _told(mistake, case)
    return None


def checked(exercise, got, expected, mistakes: Callable[[], list[Cause]], **kwargs) -> float:
    """``assert_close``, building the (slow) list of common mistakes only when it fails."""
    try:
        return assert_close(exercise, got, expected, **kwargs)
    except CheckFailure:
        assert_close(exercise, got, expected, causes=mistakes(), **kwargs)
        raise


def records(kind: type, rows: Iterable[Sequence]) -> tuple:
    """``rows`` as records of ``kind`` (a NamedTuple): plain tuples given by a test, too."""
    return tuple(kind(*row) for row in rows)


# ----------------------------------------------------------------------------------------------
# The case table: each exercise's cases are written once, and the notebook's test cells, the
# hidden tests and ``make check`` all read them from here.


@dataclass(frozen=True)
class Exercise:
    """One graded exercise and its cases.

    ``check(*answers, **case)`` runs one set of cases; ``answers`` are the notebook objects named
    by ``reads`` (in order). ``visible`` holds the keyword arguments of the cases the released
    test cell runs, ``hidden`` those of its hidden tests (``None``: no hidden tests). The
    notebook's test cell ``grade_id`` calls ``function`` (the public name of ``checker()``)::

        check_rnn_cell(rnn_cell)
        ### BEGIN HIDDEN TESTS
        check_rnn_cell(rnn_cell, hidden=True)
        ### END HIDDEN TESTS

    and calling the exercise on a notebook namespace runs both sets, the way the autograder
    does. ``prerequisite`` names an exercise this one builds on (its failure is then pointed
    out); :func:`exercise_table` links it to that exercise (``before``).
    """

    name: str
    function: str
    check: Callable[..., None]
    reads: tuple[str, ...]
    visible: Mapping[str, object]
    hidden: Mapping[str, object] | None = None
    grade_id: str = ""
    prerequisite: str | None = None
    before: Exercise | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not self.grade_id:
            object.__setattr__(self, "grade_id", f"{self.name}_check")

    def case_sets(self) -> tuple[str, ...]:
        """``("visible", "hidden")``, or ``("visible",)`` when there are no hidden tests."""
        return CASE_SETS if self.hidden is not None else (VISIBLE,)

    def cases(self, which: str) -> Mapping[str, object]:
        """The keyword arguments of case set ``which`` (``"visible"`` or ``"hidden"``)."""
        if which not in self.case_sets():
            raise ValueError(
                f"{self.function}: cases must be one of {self.case_sets()}, got {which!r}"
            )
        return self.visible if which == VISIBLE else self.hidden

    def checker(self) -> Callable[..., None]:
        """The function a notebook's test cell calls: ``checker()(*answers, hidden=False)``.

        ``hidden=True`` runs the hidden cases instead of the visible ones. Other keyword
        arguments replace those of the visible set (for tests that try other sizes).
        """
        exercise = self

        def check(*answers, hidden: bool = False, **override):
            kwargs = dict(exercise.cases(HIDDEN if hidden else VISIBLE))
            if override and hidden:
                raise ValueError("give either hidden=True or keyword arguments, not both")
            kwargs.update(override)
            exercise.check(*answers, **kwargs)

        check.__name__ = check.__qualname__ = self.function
        check.__doc__ = self.check.__doc__
        check.__module__ = self.check.__module__
        return check

    def test_lines(self) -> list[str]:
        """The code lines (comments aside) of this exercise's test cell in solutions/."""
        call_args = ", ".join(self.reads)
        lines = [f"{self.function}({call_args})"]
        if self.hidden is not None:
            lines += [
                "### BEGIN HIDDEN TESTS",
                f"{self.function}({call_args}, hidden=True)",
                "### END HIDDEN TESTS",
            ]
        return lines

    def run(self, namespace: Mapping[str, object], which: Sequence[str] | None = None) -> None:
        """Run the case sets ``which`` (default: all, as the autograder does) on a notebook."""
        answers = [get(namespace, name) for name in self.reads]
        check = self.checker()

        def everything():
            for case_set in which or self.case_sets():
                check(*answers, hidden=case_set == HIDDEN)

        if self.prerequisite is None:
            everything()
            return
        before = self.before
        if before is None:
            raise ValueError(f"{self.name}: prerequisite {self.prerequisite!r} is not linked")
        after(self.prerequisite, everything, lambda: before.run(namespace, (VISIBLE,)))

    def __call__(self, namespace: Mapping[str, object]) -> None:
        self.run(namespace)


def exercise_table(*exercises: Exercise) -> dict[str, Exercise]:
    """``{name: exercise}`` for a lesson's exercises, in notebook order, each prerequisite
    linked to its exercise."""
    table = {e.name: e for e in exercises}
    if len(table) != len(exercises):
        raise ValueError("two exercises share a name")
    for e in exercises:
        if e.prerequisite is not None:
            if e.prerequisite not in table:
                raise ValueError(f"{e.name}: unknown prerequisite {e.prerequisite!r}")
            object.__setattr__(e, "before", table[e.prerequisite])
    return table
