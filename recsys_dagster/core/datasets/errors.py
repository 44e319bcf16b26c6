"""Errors raised for unusable input: one line, naming the file, the row and the problem."""


class DatasetError(ValueError):
    """Input that cannot be used at all (missing file, missing column, bad checksum)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
