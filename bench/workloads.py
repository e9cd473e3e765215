"""The DAG workloads orchestrators are compared on, as plain data.

One `Workload` is walked three ways: by Maestro (as a workflow of `bench` provider
steps, every step's instructions `sleep DURATION` or empty for a no-op), by the
asyncio floor and by the gRPC floor (`bench.floors`). Pure: no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

IN_FLIGHT = 100
"""Every workload runs with at most this many steps in flight."""

PERSONA = "backend_developer"
"""Any registered persona: the bench provider does not look at it."""


@dataclass(frozen=True)
class Step:
    id: str
    depends_on: tuple[str, ...]
    sleep_ms: int


@dataclass(frozen=True)
class Workload:
    """A named DAG of steps, walked with at most `in_flight` steps at once."""

    key: str
    """W1..W4 (or a smaller variant's key)."""
    description: str
    steps: tuple[Step, ...]
    per_step: bool
    """Reported as ms per step (no-op steps) rather than as a multiple of the ideal."""
    in_flight: int = IN_FLIGHT

    @property
    def size(self) -> int:
        return len(self.steps)

    def ideal_seconds(self) -> float:
        """The wall time with free orchestration: the critical path's sleeps, levelled by
        the in-flight cap (steps of equal sleep in waves of `in_flight`)."""
        return ideal_seconds(self.steps, self.in_flight)

    def workflow_yaml(self) -> str:
        """The workload as a Maestro workflow (JSON is YAML; exact and compact)."""
        steps = [
            {
                "id": step.id,
                "persona": PERSONA,
                **({"depends_on": list(step.depends_on)} if step.depends_on else {}),
                **({"instructions": f"sleep {step.sleep_ms}ms"} if step.sleep_ms else {}),
            }
            for step in self.steps
        ]
        # One attempt: a failed step must show as a failed round, not hide in a retry.
        document = {
            "name": f"bench-{self.key.lower()}",
            "default_timeout": "10m",
            "retry": {"max_attempts": 1},
            "steps": steps,
        }
        return json.dumps(document, separators=(",", ":"))


def ideal_seconds(steps: Sequence[Step], in_flight: int) -> float:
    """Lower bound of the wall time: longest sleep path, or the cap's waves if longer.

    For the shapes here (layers of equal sleeps) the maximum of the two is exact:
    a layer of n steps sleeping d takes ceil(n / in_flight) * d with the cap.
    """
    finish: dict[str, float] = {}
    for step in steps:  # declared in topological order
        start = max((finish[dep] for dep in step.depends_on), default=0.0)
        finish[step.id] = start + step.sleep_ms / 1000
    critical = max(finish.values(), default=0.0)
    total_work = sum(step.sleep_ms for step in steps) / 1000
    return max(critical, total_work / in_flight)


def _sid(layer: int, index: int) -> str:
    return f"s{layer}-{index}"


def layered(layers: int, width: int, sleep_ms: int, *, full: bool) -> Iterator[Step]:
    """`layers` × `width` steps; node (k, i) depends on (k-1, i), or on all of layer
    k-1 when `full`."""
    for k in range(layers):
        for i in range(width):
            if k == 0:
                deps: tuple[str, ...] = ()
            elif full:
                deps = tuple(_sid(k - 1, j) for j in range(width))
            else:
                deps = (_sid(k - 1, i),)
            yield Step(_sid(k, i), deps, sleep_ms)


def chain(length: int, sleep_ms: int) -> Iterator[Step]:
    """Each step depends on the one before it."""
    for n in range(length):
        yield Step(f"c{n}", (f"c{n - 1}",) if n else (), sleep_ms)


def w1(layers: int = 10, width: int = 100) -> Workload:
    return Workload(
        "W1",
        f"{layers * width:,} no-op steps, {layers} layers × {width} (node k,i depends on k-1,i)",
        tuple(layered(layers, width, 0, full=False)),
        per_step=True,
    )


def w2(length: int = 200) -> Workload:
    return Workload("W2", f"a chain of {length} no-op steps", tuple(chain(length, 0)), True)


def w3(layers: int = 4, width: int = 10, sleep_ms: int = 100) -> Workload:
    return Workload(
        "W3",
        f"{layers} layers × {width}, each node depends on the whole previous layer, "
        f"steps sleep {sleep_ms} ms",
        tuple(layered(layers, width, sleep_ms, full=True)),
        per_step=False,
    )


def w4(count: int = 500, sleep_ms: int = 200) -> Workload:
    return Workload(
        "W4",
        f"{count} independent steps sleeping {sleep_ms} ms",
        tuple(Step(f"p{n}", (), sleep_ms) for n in range(count)),
        per_step=False,
    )


def full_workloads() -> tuple[Workload, ...]:
    """W1-W4 at the sizes issue 6 names."""
    return (w1(), w2(), w3(), w4())


def quick_workloads() -> tuple[Workload, ...]:
    """The same shapes, smaller, for a smoke run of about a minute."""
    return (w1(layers=5, width=40), w2(length=40), w3(layers=2), w4(count=200))


def tiny_workload() -> Workload:
    """The smallest layered DAG: warms every contender up, and keeps the harness alive
    in the e2e test."""
    return Workload(
        "tiny", "2 layers × 3 no-op steps", tuple(layered(2, 3, 0, full=False)), per_step=True
    )
