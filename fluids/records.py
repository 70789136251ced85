"""What :func:`lawful.fluids.run` returns: the last per-step records and whole-run extrema.

A run of 10^6 steps must not hold 10^6 dicts (about 1.5 KB each): the CSV streams every record
to disk, and :class:`RunRecords` keeps only a bounded window of the most recent ones in memory,
plus the minimum and maximum of every numeric field over *all* steps (O(1) memory in steps).
A field that was NaN at any step has NaN for its maximum and minimum (as ``numpy.max``): until
2026-12-04 the NaN steps were skipped, so the "worst divergence of the run" of a run whose
divergence went NaN read as the finite value of the steps before.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Sequence

from lawful.kernels.errors import InputError

__all__ = ["RunRecords", "DEFAULT_KEEP"]

#: Records :func:`lawful.fluids.run` keeps by default (about 1.5 MB); older ones are dropped.
DEFAULT_KEEP = 1000


def _maxlen(keep) -> int | None:
    """``keep`` -> deque maxlen: "all" -> None, "last" -> 1, an int >= 1 -> itself."""
    if keep == "all":
        return None
    if keep == "last":
        return 1
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InputError(f"keep={keep!r}: use 'last', 'all' or a number of records >= 1 (default {DEFAULT_KEEP}).")
    return keep


class RunRecords(Sequence):
    """The per-step records of a run: a read-only sequence of the last ``keep`` step dicts (all of
    them with ``keep="all"``), so ``records[-1]`` is the last step and ``len(records)`` the number
    kept (at most ``keep``). Whole-run figures, over every step including dropped ones:
    :attr:`total` (steps recorded), :attr:`dropped`, :meth:`max` and :meth:`min` of any numeric
    field (e.g. ``records.max("div_max_rel")``: the worst divergence of the run; NaN when the field
    was NaN at any step).
    """

    def __init__(self, keep=DEFAULT_KEEP):
        self.keep = keep
        self._window = deque(maxlen=_maxlen(keep))
        self.total = 0
        self._max: dict = {}
        self._min: dict = {}
        self._nan: set = set()      # the fields that were NaN at some step

    def append(self, record: dict) -> None:
        """Add one step's record (a flat dict of numbers), updating the whole-run extrema."""
        self._window.append(record)
        self.total += 1
        for k, x in record.items():
            if isinstance(x, (int, float, numbers.Real)) and not isinstance(x, bool):   # numpy scalars too
                if math.isnan(x):
                    self._nan.add(k)
                    continue
                if k not in self._max or x > self._max[k]:
                    self._max[k] = x
                if k not in self._min or x < self._min[k]:
                    self._min[k] = x

    @property
    def dropped(self) -> int:
        """Records no longer held (``total - len(self)``); they are in the run's CSV if one was given."""
        return self.total - len(self._window)

    def max(self, key: str) -> float:
        """Largest value of field ``key`` over every step of the run; NaN when it was NaN at any step."""
        return self._extremum(self._max, key)

    def min(self, key: str) -> float:
        """Smallest value of field ``key`` over every step of the run; NaN when it was NaN at any step."""
        return self._extremum(self._min, key)

    def _extremum(self, table, key):
        if key in self._nan:
            return math.nan
        if key not in table:
            raise InputError(f"no numeric field {key!r} in the run's records; known: {sorted(set(table) | self._nan)}.")
        return table[key]

    def __len__(self) -> int:
        return len(self._window)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self._window)[index]
        n = len(self._window)
        if not -n <= index < n:
            raise IndexError(f"record index {index} out of range: {n} kept of {self.total} steps "
                             f"(keep={self.keep!r}).")
        return self._window[index]

    def __repr__(self) -> str:
        return f"RunRecords({len(self)} kept of {self.total} steps, keep={self.keep!r})"
