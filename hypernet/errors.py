"""Errors the library raises on purpose; anything else is a bug."""


class InputError(ValueError):
    """Bad user input (missing model, corrupt tokenizer, unknown method...).

    The message is one line meant for the user; the CLI prints it and exits with status 2,
    the service turns it into a 4xx problem and never retries it.
    """


class Cancelled(Exception):
    """The caller asked to stop; raised at the next stage boundary, before anything is kept."""
