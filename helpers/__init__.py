"""Shared code for the recurrent neural network course.

Import it in a notebook with ``import helpers``; it is installed (editable) into the course's
``.venv`` by ``make lab`` / ``make test``. It holds no exercise answers.
"""

from helpers.notebook import load_notebook
from helpers.runtime import (
    DATA_DIR,
    IMAGES_DIR,
    REPO_ROOT,
    data_path,
    fast_or_full,
    get_device,
    image_path,
    is_fast,
    seed_everything,
    show_image,
)

__all__ = [
    "DATA_DIR",
    "IMAGES_DIR",
    "REPO_ROOT",
    "data_path",
    "fast_or_full",
    "get_device",
    "image_path",
    "is_fast",
    "load_notebook",
    "seed_everything",
    "show_image",
]
