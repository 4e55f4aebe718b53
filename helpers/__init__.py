"""Shared code for the recurrent neural network course.

Import it in a notebook with ``import helpers``; it is installed (editable) into the course's
``.venv`` by ``make lab`` / ``make test``, and from a wheel wherever else a lesson runs (its
first cell installs it), with the data, diagrams and checkpoint the lessons read. It holds no
exercise answers.
"""

import importlib
import importlib.util

# Names are imported on first use (PEP 562), so that tools needing a small part of helpers (the
# autograder's command line and its nbgrader plug-in) do not pay for importing torch.
_EXPORTS = {
    "load_notebook": "helpers.notebook",
    "DATA_DIR": "helpers.runtime",
    "IMAGES_DIR": "helpers.runtime",
    "data_path": "helpers.runtime",
    "fast_or_full": "helpers.runtime",
    "get_device": "helpers.runtime",
    "image_path": "helpers.runtime",
    "is_fast": "helpers.runtime",
    "seed_everything": "helpers.runtime",
    "show_image": "helpers.runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # helpers.runtime and friends
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
