"""What a step owes: its declared deliverables, and no path another step owns.

Both checks apply to every provider's result. The agent loop also uses them while it
works: a write to an owned path is refused at once, and a submit without every
deliverable gets one repair turn before the attempt fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from maestro.paths import is_shared
from maestro.personas import Persona
from persona_service.models import FailureKind, StepFailed, StepRequest, TextFile


def missing_deliverables(persona: Persona, written: Iterable[str]) -> list[str]:
    """The persona's deliverables the step did not write.

    A directory deliverable ("app/") counts as written when any file under it is.
    """
    paths = set(written)
    missing = []
    for deliverable in persona.deliverables:
        target = deliverable.path
        if target.endswith("/"):
            if not any(p.startswith(target) for p in paths):
                missing.append(target)
        elif target not in paths:
            missing.append(target)
    return missing


def owner_of(path: str, owned: Mapping[str, str], shared: Iterable[str]) -> str | None:
    """The other step that owns `path`, or None when this step may write it."""
    step = owned.get(path)
    if step is None or is_shared(path, shared):
        return None
    return step


def check_ownership(request: StepRequest, files: Iterable[TextFile]) -> None:
    """Fails the attempt when it wrote a path another step of the run owns.

    Raises:
        StepFailed: FATAL, reason "conflict", naming every such path and its owner.
    """
    clashes = [
        f"{f.path} (written by step {step!r})"
        for f in files
        if (step := owner_of(f.path, request.owned_paths, request.shared_paths)) is not None
    ]
    if clashes:
        raise StepFailed(
            FailureKind.FATAL,
            "conflict",
            f"step {request.step_id!r} wrote paths other steps own: {', '.join(clashes)}; "
            "declare them shared in the workflow or give each step its own paths",
        )


def check_deliverables(persona: Persona, files: Iterable[TextFile]) -> None:
    """Fails the attempt when it did not write every declared deliverable.

    Raises:
        StepFailed: RETRYABLE (another attempt may do better), reason
            "missing_deliverables".
    """
    missing = missing_deliverables(persona, (f.path for f in files))
    if missing:
        raise StepFailed(
            FailureKind.RETRYABLE,
            "missing_deliverables",
            f"missing deliverables: {', '.join(missing)}",
        )
