"""Which step of a run wrote each path: for telling a step where it could clash.

The worker refuses to overwrite a path another step owns; the scheduler sends it the
owned paths under the step's deliverables only (not the whole tree). Looked up by
deliverable, exact paths in a dict and "dir/" prefixes by bisection in the sorted
paths, so a run of a thousand steps does not scan every path on every dispatch.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping


class PathOwners:
    """The latest writer of each path of one run."""

    def __init__(self, owners: Mapping[str, str] | None = None) -> None:
        self._owners: dict[str, str] = dict(owners or {})
        self._sorted: list[str] = sorted(self._owners)

    def note(self, step_id: str, paths: Iterable[str]) -> None:
        """Records that `step_id` wrote `paths`."""
        for path in paths:
            if path not in self._owners:
                bisect.insort(self._sorted, path)
            self._owners[path] = step_id

    def written_by(self, step_ids: set[str]) -> list[str]:
        """The paths whose latest version one of `step_ids` wrote, sorted."""
        return [path for path in self._sorted if self._owners[path] in step_ids]

    def others_under(self, targets: Iterable[str], step_id: str) -> tuple[tuple[str, str], ...]:
        """(path, owner) of the paths another step wrote at a target: the path itself, or
        anything under a target ending in "/"; sorted by path."""
        found: set[str] = set()
        for target in targets:
            if not target.endswith("/"):
                if target in self._owners:
                    found.add(target)
                continue
            index = bisect.bisect_left(self._sorted, target)
            while index < len(self._sorted) and self._sorted[index].startswith(target):
                found.add(self._sorted[index])
                index += 1
        return tuple(
            sorted((path, self._owners[path]) for path in found if self._owners[path] != step_id)
        )
