"""The data errors: :class:`Problem` (where and what), :class:`DataError`, and finding one behind Ray's wrappers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set: where (file, row, column) and what."""

    file: str
    what: str
    row: int | None = None  # 0-based row within ``file``
    column: str | None = None
    event_id: int | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            eid = "" if self.event_id is None else f" (event_id {self.event_id})"
            where.append(f"row {self.row}{eid}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return ": ".join(where + [self.what])


class DataError(ValueError):
    """Bad input data; ``problems`` lists everything found (``problem`` is the first).

    ``hint``: what to do for the whole list (e.g. the command that lists every problem).
    Pickles with its problems, so it crosses Ray task boundaries intact."""

    def __init__(self, problems: Problem | Sequence[Problem], hint: str = ""):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        if not self.problems:
            raise ValueError("DataError needs at least one problem")
        self.hint = hint
        lines = [str(p) for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"... and {len(self.problems) - 20} more problems")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (type(self), (self.problems, self.hint))

    @property
    def problem(self) -> Problem:
        return self.problems[0]

    @property
    def file(self) -> str:
        return self.problem.file

    @property
    def row(self) -> int | None:
        return self.problem.row

    def one_line(self, limit: int = 3) -> str:
        """The first ``limit`` problems on one line, then how many more there are (and the hint)."""
        text = "; ".join(" ".join(str(p).split()) for p in self.problems[:limit])
        more = len(self.problems) - limit
        if more > 0:
            text += f"; and {more} more {'problems' if more > 1 else 'problem'}"
            text += f": {self.hint}" if self.hint else ""
        return text


def find_data_error(exc: BaseException) -> DataError | None:
    """The DataError behind ``exc``, or None: looks through exception chaining and Ray's
    wrappers (``RayTaskError.cause``, Ray Train's ``WorkerGroupError.worker_failures`` and
    ``ControllerError.controller_failure``), so a bad file met inside a Ray worker can be
    reported as the one line it is."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError(DataError) also passes isinstance
        if isinstance(e, DataError):
            return cause if isinstance(cause, DataError) else e
        failures = getattr(e, "worker_failures", None)
        todo += [cause, getattr(e, "controller_failure", None), e.__cause__, e.__context__,
                 *(failures.values() if isinstance(failures, dict) else ())]
    return None
