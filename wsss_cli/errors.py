"""The one exception type that means "the user asked for something we cannot do"."""

_WORKER_PREFIX = "Caught WsssError in DataLoader worker"


class WsssError(Exception):
    """A user error: bad option, bad input data, incompatible workdir or checkpoint.

    The CLI prints ``Error: <message>`` on one line and exits with code 2; anything
    else escaping a command is a bug and keeps its traceback.
    """

    exit_code = 2

    def __init__(self, message: str):
        if message.startswith(_WORKER_PREFIX):
            # a DataLoader worker re-raises with the whole worker traceback as the
            # message; the user needs only the original one-line message at its end
            message = message.rstrip().rsplit("WsssError: ", 1)[-1]
        super().__init__(message)
        self.message = message
