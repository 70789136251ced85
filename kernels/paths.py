"""Output folders checked before any computing: one rule for the command line and the library.

>>> out = writable_folder("runs/md", "--out")     # made if missing; InputError if it cannot be used
"""

from __future__ import annotations

import os
from pathlib import Path

from lawful.kernels.errors import InputError

__all__ = ["writable_folder"]


def writable_folder(path: str | os.PathLike, what: str = "out") -> Path:
    """``path`` as a folder this process can write into, created (with its parents) if missing.

    ``what`` names the argument in the error (``"--out"``, ``"out="``). An existing file, a folder
    that cannot be created (``/proc/x``) or one without write permission is an
    :class:`~lawful.kernels.errors.InputError` naming the value and the fix, raised before any
    output is computed, so no long run ends by failing to save.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {str(path)!r} is an existing file, not a folder: pass a folder name (it is created).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what} {str(path)!r} cannot be created ({exc.strerror}): choose a folder you can write "
                         "to.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r} is not writable: choose a folder you can write to.")
    return folder
