"""Document mode: one call whose answer is typed structured output, rendered to files.

An answer cut off at max_tokens is asked for once more with twice the output budget
(and a note to be concise), never repeated unchanged; cut again, the attempt fails.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from maestro.paths import BadPath, check_file_size, normalize_artifact_path
from persona_service.documents import DocumentKind, Rendered
from persona_service.models import FailureKind, StepFailed, TextFile
from persona_service.prompts import Prompt
from persona_service.session import Session, answer_text

MAX_OUTPUT_TOKENS = 128_000


def _problems(err: ValidationError) -> str:
    # Locations and reasons only: the offending values are model output.
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
        for e in err.errors(include_url=False, include_input=False)
    )


def checked_files(files: dict[str, str]) -> tuple[TextFile, ...]:
    """Normalises and size-checks rendered files.

    Raises:
        StepFailed: RETRYABLE "bad_output" for an unusable or repeated path.
    """
    out: list[TextFile] = []
    seen: set[str] = set()
    for raw, content in files.items():
        try:
            path = normalize_artifact_path(raw)
            check_file_size(path, len(content.encode("utf-8")))
        except BadPath as err:
            raise StepFailed(
                FailureKind.RETRYABLE, "bad_output", f"bad file in the answer: {err}"
            ) from None
        if path in seen:
            raise StepFailed(
                FailureKind.RETRYABLE,
                "bad_output",
                f"bad file in the answer: path {path!r} appears twice",
            )
        seen.add(path)
        out.append(TextFile(path=path, content=content))
    return tuple(out)


async def run_document(
    session: Session, prompt: Prompt, kind: DocumentKind
) -> tuple[Rendered, tuple[TextFile, ...]]:
    """Asks for the persona's typed answer and renders its documents.

    Raises:
        StepFailed: the call failed, or the answer was cut twice, refused, or invalid.
    """
    schema = kind.schema()
    max_tokens = session.max_tokens
    messages: list[dict[str, Any]] = [{"role": "user", "content": list(prompt.blocks)}]
    for call in (1, 2):
        message = await session.call(
            turn=call,
            when=f"before call {call}",
            system=prompt.system,
            messages=messages,
            output_schema=schema,
            max_tokens=max_tokens,
        )
        session.stopped(message)
        if message.stop_reason != "max_tokens":
            break
        if call == 2 or max_tokens >= MAX_OUTPUT_TOKENS:
            raise StepFailed(
                FailureKind.FATAL,
                "max_tokens",
                f"{session.model}'s answer hit max_tokens ({max_tokens}) before it was "
                "complete; raise MAESTRO_WORKER_ANTHROPIC_MAX_TOKENS or run the step in code "
                "mode",
            )
        max_tokens = min(max_tokens * 2, MAX_OUTPUT_TOKENS)
        session.progress(f"answer cut at max_tokens; asking once more with {max_tokens}")
        note = (
            "\n\nAn earlier answer to this request was cut off at the output limit. Keep "
            "every field complete but concise."
        )
        last = {**prompt.blocks[-1], "text": prompt.blocks[-1]["text"] + note}
        messages = [{"role": "user", "content": [*prompt.blocks[:-1], last]}]
    text = answer_text(message)
    try:
        answer = kind.answer.model_validate(json.loads(text))
    except json.JSONDecodeError as err:
        raise StepFailed(
            FailureKind.RETRYABLE,
            "bad_output",
            f"{session.model}'s answer is not the JSON asked for (stop_reason "
            f"{message.stop_reason}): {err.msg} at character {err.pos}",
        ) from None
    except ValidationError as err:
        raise StepFailed(
            FailureKind.RETRYABLE,
            "bad_output",
            f"{session.model}'s answer does not match the {kind.answer.__name__} schema: "
            f"{_problems(err)}",
        ) from None
    rendered = kind.render(answer, session.persona)
    files = checked_files(rendered.files)
    session.progress(
        f"{session.model} answered: "
        + ", ".join(f"{f.path} ({len(f.content.encode()) / 1024:.1f} KiB)" for f in files)
    )
    return rendered, files
