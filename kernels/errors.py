"""The one error hierarchy of lawful.

Every error lawful raises on purpose is a :class:`LawfulError`. Subclasses name the kind of
problem; every message says what was wrong (with the offending value) and what to do about it.
Each subclass also derives from the matching built-in exception (``ValueError``, ``OSError``,
``FloatingPointError``...) so that generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "LawfulError",
    "InputError",
    "ShapeError",
    "UnsupportedSpeciesError",
    "ModelFileError",
    "NumericalError",
    "ConvergenceError",
    "BackendError",
    "OutOfDomainWarning",
]


class LawfulError(Exception):
    """Base class of every error raised on purpose by lawful."""


class InputError(LawfulError, ValueError):
    """A user-supplied value is invalid (negative grid spacing, NaN coordinates, unknown name...)."""


class ShapeError(InputError):
    """Arrays whose shapes (or grid staggering) do not match what the operation needs."""


class UnsupportedSpeciesError(InputError):
    """Atoms of a chemical element the model was not trained on (``unknown``, ``known``: element
    symbols). ``message`` replaces the default text (which speaks of a trained model) where the
    fix differs, e.g. for a model being trained."""

    def __init__(self, unknown, known, message: str | None = None):
        self.unknown = sorted(set(unknown))
        self.known = list(known)
        super().__init__(message or (
            f"the model does not know element(s) {self.unknown}; it was trained on {self.known}. "
            "Use a model trained on these elements, or restrict the model to a subset of atoms "
            "(ML/MM: create_force(..., atoms=[indices]))."
        ))


class ModelFileError(LawfulError, OSError):
    """A model or checkpoint file is missing, truncated, from another version or not a lawful file."""


class NumericalError(LawfulError, FloatingPointError):
    """A numerical blow-up: NaN/inf values, overlapping atoms, a CFL violation, a singular matrix."""


class ConvergenceError(NumericalError):
    """An iterative solver did not reach its tolerance within its iteration bound."""


class BackendError(LawfulError, RuntimeError):
    """A requested backend (Taichi arch, torch device, OpenMM plugin) is not available here."""


class OutOfDomainWarning(UserWarning):
    """A structure lies outside a model's training domain (e.g. two atoms closer than any pair
    in its training data): the numbers that follow are an extrapolation. Raised as a
    :class:`NumericalError` instead when the engine adapter runs in strict mode."""
