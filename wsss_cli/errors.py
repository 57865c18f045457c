"""The one exception type that means "the user asked for something we cannot do"."""

import errno
import os

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


# operating-system errors a user meets on a cluster, not bugs: the disk or quota is full,
# a path is not writable, a file vanished from a network filesystem
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
                errno.ESTALE, errno.EIO}


def user_message(error: BaseException) -> str | None:
    """The one-line message of a user error (a :class:`WsssError` or an operating-system
    error of the kinds above), None for anything else (a bug)."""
    if isinstance(error, WsssError):
        return error.message
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = error.filename if error.filename is not None else "wsss"
        return f"{where}: {error.strerror or os.strerror(error.errno)}"
    return None
