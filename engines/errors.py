"""Errors shared by every command."""


class UserError(Exception):
    """A problem with the user's input (bad file, unknown model, wrong shapes): the CLI prints
    it as one line and exits with code 2, without a traceback."""
