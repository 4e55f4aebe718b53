"""The instructor's grading commands, run by ``make autograde | feedback | export`` and friends.

Real nbgrader does the work; this module makes it trustworthy for a whole class. Run from the
course root::

    python -m helpers.grading autograde          # every submission in grading/submitted/
    python -m helpers.grading feedback           # grading/feedback/..., hidden tests removed
    python -m helpers.grading export             # grading/grades.csv, grades-by-student.csv and
                                                 # grades-canvas.csv (helpers.grading.export)
    python -m helpers.grading release-assignments  # lessons/ -> the nbgrader exchange
    python -m helpers.grading collect            # the exchange -> grading/submitted/
    python -m helpers.grading release-feedback   # grading/feedback/ -> the exchange
    python -m helpers.grading autograde --shard 2/3  # a third of the class, grading/shards/
    python -m helpers.grading.merge              # the shards -> the course's gradebook
    python -m helpers.grading.similarity 01      # grading/similarity/<lesson>/report.html

``autograde`` works in four steps:

1. **register**: the lessons to grade are recorded in the gradebook (generated into
   ``grading/release``, so ``lessons/`` is never touched), and a plan is made
   (:mod:`helpers.grading.pool`): submissions unchanged since they were graded are skipped,
   those a killed run left unfinished are graded again;
2. **stage**: each submission is read (never modified) and a clean copy is written to
   ``grading/staged/job<N>/<student>/<lesson>/``: a file that is not a notebook, a truncated or
   oversized file, an unknown notebook format, a missing or renamed notebook are caught here with
   a reason; test cells are put back as released, cell metadata (grade ids, points, types) is
   restored, duplicated cells lose their grading role, and every change is noted;
3. **grade**: ``--jobs`` worker processes (:mod:`helpers.grading.worker`) run nbgrader's
   ``Autograde`` on the staged copies, one at a time each, every notebook in its own sandboxed
   kernel (:mod:`helpers.grading.sandbox`: the gradebook, solutions and other students hidden,
   the course read-only, no network, limits on memory, CPU, processes and file size) with a hardened
   executor (:mod:`helpers.grading.execute`: a kernel that dies or hangs costs the cells that did
   not run, not the whole notebook);
4. **record**: every submission ends with a score, never "None"; each lost point gets a reason,
   written to ``grading/reasons.csv``, ``grading/reasons/<lesson>.json``, the gradebook's
   comments (shown in feedback) and the summary printed at the end.
"""
