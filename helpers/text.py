"""Text for the character-level lessons: a stable vocabulary and the corpora in ``helpers/data``.

A character model needs a fixed mapping between characters and integer indices. The
``tuple(set(text))`` of Udacity's char-RNN notebook (``Character_Level_RNN_Exercise.ipynb``) gives
a different order in every Python process (string hashing is randomised), so a model saved in
one session would read garbage in the next. ``Vocab`` sorts the characters instead, and is stored
inside every checkpoint.

Typical use::

    corpus = load_corpus("tinyshakespeare")        # text, vocab, train and validation indices
    corpus.vocab.decode(corpus.train[:20])          # -> 'First Citizen:\\nBefor'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from helpers import validate
from helpers.runtime import DATA_DIR, data_path

#: The shipped corpora the lessons and the benchmark know by name.
CORPORA = {"tinyshakespeare": "tinyshakespeare.txt", "anna": "anna.txt"}


class Vocab:
    """The characters of a corpus, sorted, with their integer indices.

    Args:
        chars: the distinct characters (any iterable of one-character strings, in any order;
            duplicates are removed). At least two are needed: a model that can only ever
            predict one character has nothing to learn.

    Attributes:
        chars: the sorted characters, as a tuple; ``chars[i]`` is the character of index ``i``.
    """

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"a vocabulary holds single characters, got {bad[:5]!r}")
        unique = sorted(set(chars))
        if len(unique) < 2:
            raise ValueError(
                f"a vocabulary needs at least 2 distinct characters, got {len(unique)} "
                f"({''.join(unique)!r}); is the corpus empty or one repeated character?"
            )
        self.chars: tuple[str, ...] = tuple(unique)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """The vocabulary of every character that occurs in ``text``."""
        if not isinstance(text, str):
            raise ValueError(f"expected the corpus as a str, got {type(text).__name__}")
        if not text:
            raise ValueError("the corpus is empty: a character model needs text to learn from")
        return cls(set(text))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def __contains__(self, char) -> bool:
        return char in self._index

    def __repr__(self) -> str:
        preview = "".join(self.chars[:40])
        more = "..." if len(self.chars) > 40 else ""
        return f"Vocab({len(self)} chars: {preview!r}{more})"

    def encode(self, text: str) -> np.ndarray:
        """The indices of ``text``'s characters: an int64 array of shape ``(len(text),)``.

        Raises:
            ValueError: when ``text`` holds characters that are not in the vocabulary (it names
                them), e.g. a prime text with a character the model never saw.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError:
            unknown = sorted({c for c in text if c not in self._index})
            raise ValueError(
                f"characters {unknown!r} are not in the vocabulary of {len(self)} characters; "
                "use only characters the model was trained on"
            ) from None

    def decode(self, indices) -> str:
        """The text of a sequence of indices (a list, a NumPy array or a 1-D tensor)."""
        values = np.asarray(indices.tolist() if hasattr(indices, "tolist") else indices)
        if values.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of indices, got shape {values.shape}")
        if values.size and (values.min() < 0 or values.max() >= len(self)):
            raise ValueError(
                f"indices must lie in [0, {len(self) - 1}], got values from {values.min()} "
                f"to {values.max()}"
            )
        return "".join(self.chars[int(i)] for i in values)

    def to_dict(self) -> dict:
        """A plain dict (``{"chars": "..."}``) to store inside a checkpoint."""
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Vocab:
        """The vocabulary ``to_dict`` stored."""
        if not isinstance(data, Mapping) or not isinstance(data.get("chars"), str):
            raise ValueError("expected a dict with a 'chars' string, as Vocab.to_dict() returns")
        return cls(data["chars"])

    def difference(self, other: Vocab) -> str:
        """A short description of how two vocabularies differ (for error messages)."""
        missing = sorted(set(other.chars) - set(self.chars))
        extra = sorted(set(self.chars) - set(other.chars))
        parts = [f"{len(self)} characters vs {len(other)}"]
        if extra:
            parts.append(f"only in the first: {''.join(extra)[:30]!r}")
        if missing:
            parts.append(f"only in the second: {''.join(missing)[:30]!r}")
        return "; ".join(parts)


@dataclass
class Corpus:
    """A corpus ready for training.

    Attributes:
        name: the corpus' name (``"tinyshakespeare"``).
        text: the whole text.
        vocab: its sorted vocabulary.
        train: int64 ``(n_train,)`` indices of the first 90 % of the text.
        val: int64 ``(n_val,)`` indices of the last 10 % (held out for validation).
    """

    name: str
    text: str
    vocab: Vocab
    train: np.ndarray
    val: np.ndarray


def read_text(name: str) -> str:
    """The text of a shipped corpus, by name (``"tinyshakespeare"``) or file name."""
    filename = CORPORA.get(name, name)
    if not (DATA_DIR / filename).is_file():
        raise ValueError(f"unknown corpus {name!r}; expected one of {sorted(CORPORA)}")
    return data_path(filename).read_text(encoding="utf-8")


def split_train_val(encoded: np.ndarray, val_fraction: float = 0.1):
    """Split an encoded text into ``(train, val)``: the last ``val_fraction`` is held out.

    The split is by position, not at random: validation text is text the model never saw, and
    it stays one contiguous stream so the hidden state can be carried through it.
    """
    validate.fraction("val_fraction", val_fraction)
    n_val = int(round(len(encoded) * val_fraction))
    if n_val < 2 or len(encoded) - n_val < 2:
        raise ValueError(
            f"a text of {len(encoded)} characters is too short to hold out {val_fraction:.0%}"
        )
    return encoded[:-n_val], encoded[-n_val:]


def make_corpus(text: str, name: str = "text", val_fraction: float = 0.1) -> Corpus:
    """A ``Corpus`` from any text (vocabulary, encoding and train/validation split)."""
    vocab = Vocab.from_text(text)
    train, val = split_train_val(vocab.encode(text), val_fraction)
    return Corpus(name=name, text=text, vocab=vocab, train=train, val=val)


def load_corpus(name: str = "tinyshakespeare", val_fraction: float = 0.1) -> Corpus:
    """Read a shipped corpus and prepare it: ``load_corpus("anna")``."""
    return make_corpus(read_text(name), name=name.removesuffix(".txt"), val_fraction=val_fraction)
