"""The one exception type of the merge: a one-line message, shown by click as `Error: ...`."""

import click


class BaiMergeError(click.ClickException, ValueError):
    """Bad BAI merge input; raised before or during a merge, never leaves complete output."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code
