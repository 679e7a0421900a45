"""DataError as raised inside Ray Data tasks (imports Ray; only the Ray path imports this).

Ray Data wraps a task's exception in ``UserCodeException``, which keeps only its text, unless
``DataContext.raise_original_map_exception`` is set; then an exception that is not a
``UserCodeException`` is logged with its full traceback on the console as a suspected Ray
bug. A :class:`RayDataError` is both: it arrives at the caller with its file and row, and
Ray Data logs it as a user error (short console lines, the traceback in its log file).
"""

from __future__ import annotations

from ray.exceptions import UserCodeException

from fm4npp.data.io import DataError


class RayDataError(DataError, UserCodeException):
    """A DataError raised in a Ray Data task (see the module docstring)."""


def for_ray(exc: DataError) -> RayDataError:
    return exc if isinstance(exc, RayDataError) else RayDataError(exc.problems, exc.hint)
