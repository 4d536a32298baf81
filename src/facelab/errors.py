"""User-facing errors.

Anything the user can fix (a missing file, a bad option, a corrupt video) raises
`FacelabError`; the CLI prints its message as one line on stderr and exits non-zero.
Every other exception is a bug and keeps its traceback.
"""


class FacelabError(Exception):
    """An error caused by the user's input; its message is a complete sentence."""

    exit_code = 1


class PartialResult(FacelabError):
    """Work stopped part-way on bad input; what was readable was kept and is said so."""

    exit_code = 3
