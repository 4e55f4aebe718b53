"""``python -m helpers.checks LESSON [--notebook PATH]``: see :mod:`helpers.checks.run`."""

import sys

from helpers.checks.run import main

sys.exit(main())
