"""nbgrader's own autograding, turned into a refusal that names the course's sandboxed grader.

``nbgrader autograde`` and the Formgrader's Autograde button run a student's notebook in a plain
kernel of the instructor's account: no sandbox, no limits, the gradebook in reach. Both are
stopped before they touch a submission, with ``MESSAGE``, which says to grade with
``make autograde``:

* the command line by the course's ``nbgrader_config.py``, which sets
  ``Autograde.autograde_preprocessors`` to ``[UseMakeAutograde]`` (the course's grader,
  ``helpers.grading``, sets its own preprocessors, the sandboxed executor first, and never meets
  this one);
* the Formgrader by this module as a Jupyter server extension, enabled in the instructor's
  server (``deploy/hub/hub.py`` writes its configuration): the Formgrader's autograde call answers
  ``MESSAGE`` as a failed autograde, which the Formgrader shows, before nbgrader removes or
  writes anything.
"""

from __future__ import annotations

from nbgrader.preprocessors import NbGraderPreprocessor

MESSAGE = (
    "this course grades only in its sandbox: run `make autograde` in the course folder "
    "(python -m helpers.grading autograde). nbgrader's own autograde, and the Formgrader's "
    "Autograde button, would run the student's code unsandboxed in the instructor's account."
)


class UseMakeAutograde(NbGraderPreprocessor):
    """Refuses to grade (``nbgrader autograde``): see the module's docstring."""

    def preprocess(self, nb, resources):
        raise RuntimeError(MESSAGE)


def refused_autograde(api, assignment_id, student_id, force=True, create=True) -> dict:
    """What the Formgrader's Autograde gets instead of nbgrader's: a failure that says why."""
    return {"success": False, "error": MESSAGE, "log": ""}


def _jupyter_server_extension_points():
    return [{"module": "helpers.grading.unsandboxed"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from nbgrader.apps.api import NbGraderAPI

    NbGraderAPI.autograde = refused_autograde
    serverapp.log.info("nbgrader's autograde answers: use make autograde (helpers.grading)")
