"""Errors shared by every command."""


class UserError(Exception):
    """A problem with the user's input (bad file, unknown model, wrong shapes): the CLI prints
    it as one line and exits with code 2, without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM that stops a command. `exit_code` is 128 + the signal
    number (130 for SIGINT, 143 for SIGTERM), what shells report for a process the signal
    ended; the CLI prints one line and exits with it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + int(signum)
