"""Error types shared by the runtime."""


class UserError(Exception):
    """A problem the user can fix (bad flag, missing backend, mismatched engine...).

    The CLI prints it as one line, without a traceback. The message should name the fix.
    """


class ImageError(Exception):
    """One input file could not be read or written; the batch goes on."""
