"""Errors the library raises on purpose; anything else is a bug."""


class InputError(ValueError):
    """Bad user input (missing model, corrupt tokenizer, unknown method...).

    The message is one line meant for the user; the CLI prints it and exits with status 2,
    the service turns it into a 4xx problem and never retries it.
    """


def is_panic(e: BaseException) -> bool:
    """A panic of a Rust library (tokenizers), which pyo3 raises as a BaseException: a
    tokenizer.json it cannot handle, not a bug of ours or a reason to stop the process."""
    return type(e).__name__ == "PanicException"


class Cancelled(Exception):
    """The caller asked to stop; raised at the next stage boundary, before anything is kept."""
