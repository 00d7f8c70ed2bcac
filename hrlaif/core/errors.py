"""One error type for bad user input.

Anything the user can fix (a config key, a data file, a model path, a judge answer)
raises `UserError`; the CLI prints its message on one line and exits with code 2.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    exit_code = 2

    def __init__(self, message: str):
        # One line, always: a multi-line message would look like a traceback in CI logs.
        super().__init__(" ".join(str(message).split()))
