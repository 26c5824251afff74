"""Errors raised for bad input data; each names the file, line and field at fault."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file is malformed. ``str(err)`` reads ``file:line: field 'x': what is wrong``."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        self.field = field
        self.reason = message
        where = "" if path is None else str(path)
        if line is not None:
            where += f":{line}"
        prefix = f"{where}: " if where else ""
        if field is not None:
            prefix += f"field {field!r}: "
        super().__init__(prefix + message)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could not be found locally, in the cache, online, or in a packaged copy."""
