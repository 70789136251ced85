"""The error hierarchy: one base, specific subclasses, messages that name the value and the fix."""

import pytest

from lawful import kernels
from lawful.kernels import (
    BackendError, ConvergenceError, InputError, LawfulError, ModelFileError, NumericalError,
    ShapeError, UnsupportedSpeciesError,
)


@pytest.mark.parametrize("cls, builtin", [
    (InputError, ValueError), (ShapeError, ValueError), (UnsupportedSpeciesError, ValueError),
    (ModelFileError, OSError), (NumericalError, FloatingPointError),
    (ConvergenceError, FloatingPointError), (BackendError, RuntimeError),
])
def test_every_error_is_a_lawful_error_and_a_builtin(cls, builtin):
    assert issubclass(cls, LawfulError) and issubclass(cls, builtin)


def test_unsupported_species_message_names_value_and_fix():
    err = UnsupportedSpeciesError(["O", "H", "O"], ["Cu"])
    msg = str(err)
    assert "['H', 'O']" in msg and "['Cu']" in msg and "atoms=" in msg
    assert err.unknown == ["H", "O"]


def test_public_names_have_docstrings():
    for name in kernels.__all__:
        obj = getattr(kernels, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
