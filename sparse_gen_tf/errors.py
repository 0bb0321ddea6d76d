"""Errors a user can cause; the command line reports each as one line."""


class UserError(Exception):
    """A mistake in the user's input; the message says what is wrong and how to fix it."""


class DataError(UserError):
    """Missing, empty or corrupt training data."""


class DivergenceError(UserError):
    """Langevin dynamics produced NaN or inf."""
