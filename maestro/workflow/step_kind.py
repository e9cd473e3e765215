"""What runs a step: its own module, so the spec and the checks of each kind's fields
(gate_spec.py) both import it at the top."""

from __future__ import annotations

from enum import StrEnum


class StepKind(StrEnum):
    """What runs a step."""

    PERSONA = "persona"
    """A persona worker (a model, or the offline provider)."""
    GATE = "gate"
    """Checks in the sandbox, judged against thresholds (maestro/workflow/gate_spec.py)."""
    APPROVAL = "approval"
    """A person's decision; `timeout` is how long to wait for it."""
