"""The interface of a takedown kind (``Kind``): what every kind implements.

``transforms.takedown.kinds`` holds the kinds themselves (one class each), their
registry and the ``Thresholds``; it says what a kind knows and how distances and
thresholds are defined. This module is only the abstract class and its defaults, so a
new kind can be written against it.
"""
from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from transforms import hashing
from transforms.takedown.photos import Photo, PhotoInput, PhotoValue, read_photo
from transforms.takedown.search import KindIndex, RowValues

Columns = Mapping[str, Sequence[Any]]  # audit column name -> a batch's cells


class Kind(abc.ABC):
    """One kind of takedown value (``transforms.takedown.kinds`` says what a kind knows)."""

    name: ClassVar[str]
    exact: ClassVar[bool] = True  # True: equality lookup; False: distance + threshold
    default_threshold: ClassVar[float | None] = None  # distance kinds: see the module docstring
    columns: ClassVar[tuple[str, ...]]  # the audit columns ``rows`` reads; the first holds the value
    can_hash_photo: ClassVar[bool] = False  # from_photo works on a photo alone
    needs_embedding: ClassVar[bool] = False  # values come from an embedding model, not a hash
    arrow_rows: ClassVar[bool] = False  # ``rows`` takes Arrow columns as they come (else lists)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A class that writes its own ``rows`` is given lists unless it says it takes Arrow.
        if "rows" in cls.__dict__ and "arrow_rows" not in cls.__dict__:
            cls.arrow_rows = False

    # -- list values

    @abc.abstractmethod
    def validate(self, value: str) -> str:
        """The normalised form of a list value; ValueError saying what is wrong."""

    def parse_values(self, values: pa.Array) -> tuple[np.ndarray, Any]:
        """Raw list cells of this kind, a whole column at once: (ok, stored). ``ok[i]``
        when cell i is valid; ``stored`` holds the ok cells' values as ``build`` takes
        them (here: ``validate``'s normalised strings, an Arrow array; the hex kinds keep
        packed codes). A cell not ok is checked again by ``validate`` alone, which names
        what is wrong, so a kind may leave any unusual cell to it."""
        ok = np.zeros(len(values), dtype=bool)
        normalised = []
        for i, cell in enumerate(values.to_pylist()):
            if not isinstance(cell, str) or not cell.strip():
                continue
            try:
                normalised.append(self.validate(cell))
            except ValueError:
                continue
            ok[i] = True
        return ok, pa.array(normalised, pa.string())

    def check_max_distance(self, number: float) -> float | None:
        """A list entry's ``max_distance`` as the entry's threshold (None: the default);
        ValueError when it is out of range. Exact kinds take none (0 is allowed)."""
        if number != 0:
            raise ValueError(f"max_distance does not apply to the exact kind {self.name!r}")
        return None

    def low_quality(self, quality: Any) -> np.ndarray:
        """Per quality (one value or an array; None / NaN: unknown): too poor to match."""
        return np.zeros(np.shape(quality), dtype=bool)

    # -- audit rows

    @abc.abstractmethod
    def record_value(self, record: Mapping[str, Any]) -> Any | None:
        """The value of this kind in one audit record, or None when it has none."""

    @abc.abstractmethod
    def rows(self, columns: Columns, n: int) -> RowValues:
        """This kind's values of a batch of ``n`` rows, as its index's ``query`` takes
        them. ``columns`` maps audit column names to lists (or numpy arrays) of n cells,
        or, for a kind with ``arrow_rows``, also to Arrow arrays as a caller has them;
        absent columns and None / malformed cells give no value."""

    # -- the index

    @abc.abstractmethod
    def build(self, values: Sequence[str], thresholds: np.ndarray, **options: Any) -> KindIndex:
        """The index of these list values (strings, or the packed codes ``parse_values``
        made for a hex kind), ``thresholds[i]`` for value i in the kind's own unit
        (``transforms.takedown.kinds``; ignored by exact kinds). ``BadEntryValue`` names the position
        of a value the index cannot take."""

    # -- comparing two values

    def distance(self, a: Any, b: Any) -> float:
        """Exact kinds: 0 when equal, infinity otherwise."""
        return 0.0 if a == b else math.inf

    def is_match(self, distance: float, threshold: float | None = None) -> bool:
        """Whether ``distance`` is a match under ``threshold`` (None: the default)."""
        if self.exact:
            return distance == 0
        limit = self.default_threshold if threshold is None else threshold
        return distance <= limit

    def matches(self, a: Any, b: Any, threshold: float | None = None) -> bool:
        return self.is_match(self.distance(a, b), threshold)

    # -- photos

    def photo_values(self, photo: Photo) -> list[PhotoValue]:
        """This kind's values of a photo (what a request submits)."""
        raise NotImplementedError(f"kind '{self.name}' cannot be computed from a photo")

    def photo_warnings(self, values: Sequence[PhotoValue]) -> list[str]:
        """What the person should be told about these values of her photo."""
        return []

    def from_photo(self, photo: PhotoInput, max_pixels: int = hashing.DEFAULT_MAX_PIXELS) -> list[str]:
        """Values of this kind for a photo (bytes or a path)."""
        if not self.can_hash_photo:
            raise NotImplementedError(f"kind '{self.name}' cannot be computed from a photo")
        return [v.value for v in self.photo_values(Photo(read_photo(photo), max_pixels))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


__all__ = ["Columns", "Kind"]
