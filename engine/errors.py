"""Errors shown to people, and the one way an exception becomes one readable line."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for or gave us: printed as one clear line, exit code 2."""


def root_cause(exc: BaseException) -> BaseException:
    """Innermost chained exception: library wrappers (the hub, httpx) hide the informative one."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), at most `limit` chars."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """A file-system error as one line naming the file: "out.wav: Permission denied"."""
    reason = exc.strerror or first_line(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason
