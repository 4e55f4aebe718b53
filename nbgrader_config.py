"""nbgrader settings: solutions/ is the source, lessons/ the release, the rest under grading/.

Run nbgrader from this folder (the Makefile does): it reads this file from the working directory.
"""

from pathlib import Path

from helpers import course  # the course's manifest owns the folder names

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

ROOT = Path(__file__).resolve().parent
# sqlite cannot create the gradebook in a missing folder, and the error nbgrader shows then is
# misleading ("run nbgrader db upgrade"): make the folders first.
(ROOT / course.EXCHANGE).mkdir(parents=True, exist_ok=True)

c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.course_id = course.COURSE_ID
for step, folder in course.FOLDERS.items():
    setattr(c.CourseDirectory, f"{step}_directory", folder)
c.CourseDirectory.db_url = f"sqlite:///{ROOT / course.GRADEBOOK}"
c.Exchange.root = str(ROOT / course.EXCHANGE)

# Seconds per cell; training cells run in fast mode (COURSE_FAST=1) while grading.
c.Execute.timeout = 120
c.KernelManager.transport_encryption = "disabled"

# A deleted test cell is put back from the gradebook instead of voiding the notebook.
c.OverwriteCells.add_missing_cells = True
# nbgrader's own autograde and the Formgrader's Autograde button would run submissions without
# the sandbox: they refuse, and say to use `make autograde` (whose grader sets its own list).
c.Autograde.autograde_preprocessors = ["helpers.grading.unsandboxed.UseMakeAutograde"]

# Feedback must not show hidden tests.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
