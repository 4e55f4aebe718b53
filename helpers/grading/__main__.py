"""``python -m helpers.grading COMMAND``: see :mod:`helpers.grading.commands`."""

from helpers.grading.commands import main

raise SystemExit(main())
