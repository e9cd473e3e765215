"""Code mode: a bounded agent loop over the Messages API with file tools.

Each turn is one model call; the tools it calls run against the step's workspace and
their results go back in the next turn. The loop is bounded by turns, by the attempt's
budget (checked before every call) and by its time. An answer cut at max_tokens is
continued (its complete tool calls are applied, the cut one is not, and the model is
told so), never repeated. A submit without every declared deliverable gets one repair
turn; after that the attempt fails with "missing deliverables: ...".

The prompt carries cache breakpoints on the system prompt, the requirement and the
shared documents; each call adds one on its latest turn, so every turn reads the
conversation so far from the cache.
"""

from __future__ import annotations

import copy
from typing import Any

from anthropic.types import ToolParam

from maestro.core.errors import MaestroError
from persona_service.checks import CheckRunner
from persona_service.contract import missing_deliverables
from persona_service.models import FailureKind, StepFailed
from persona_service.prompts import CACHE, Prompt
from persona_service.session import Session, block_param
from persona_service.tools import RUN_CHECKS, SUBMIT, ToolOutcome, Workspace, tool_definitions
from persona_service.transcript import summarize_input

_MAX_CHECK_SECONDS = 300.0
_MAX_NUDGES = 3


def with_turn_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the conversation whose last block carries a cache breakpoint."""
    out = list(messages)
    last = copy.copy(out[-1])
    content = last["content"]
    blocks: list[Any] = [content] if isinstance(content, str) else list(content)
    if isinstance(blocks[-1], str):
        blocks[-1] = {"type": "text", "text": blocks[-1]}
    blocks[-1] = {**blocks[-1], "cache_control": CACHE}
    last["content"] = blocks
    out[-1] = last
    return out


class AgentLoop:
    """Runs one code-mode attempt.

    Args:
        session: The attempt's limits, meter, transcript and model.
        workspace: The files it works on.
        max_turns: The most model calls it may make.
        checks: Runs the sandbox checks; None: no run_checks tool.
    """

    def __init__(
        self,
        session: Session,
        workspace: Workspace,
        *,
        max_turns: int,
        checks: CheckRunner | None = None,
    ) -> None:
        self._s = session
        self._workspace = workspace
        self._max_turns = max_turns
        self._checks = checks
        self._tools: list[ToolParam] = tool_definitions(with_checks=checks is not None)

    async def run(self, prompt: Prompt) -> str:
        """Loops until the model submits; returns its summary.

        Raises:
            StepFailed: a call failed, the limits were reached, or deliverables are
                still missing after the repair turn.
        """
        s = self._s
        messages: list[dict[str, Any]] = [{"role": "user", "content": list(prompt.blocks)}]
        repaired = False
        nudges = 0
        for turn in range(1, self._max_turns + 1):
            message = await s.call(
                turn=turn,
                when=f"before turn {turn}",
                system=prompt.system,
                messages=with_turn_breakpoint(messages),
                tools=self._tools,
            )
            s.stopped(message)
            content = [block_param(b) for b in message.content]
            if message.stop_reason == "max_tokens":
                messages += await self._continue_cut(turn, content)
                continue
            messages.append({"role": "assistant", "content": content})
            uses = [b for b in content if b["type"] == "tool_use"]
            if not uses:
                nudges += 1
                if nudges > _MAX_NUDGES:
                    raise StepFailed(
                        FailureKind.FATAL,
                        "no_submit",
                        f"{s.model} stopped calling tools {nudges} times without submitting",
                    )
                s.progress(f"turn {turn}: no tool call; asking {s.model} to go on")
                messages.append(
                    {
                        "role": "user",
                        "content": "Go on with the tools; call submit once every deliverable "
                        "is written.",
                    }
                )
                continue
            results, submitted = await self._run_tools(turn, uses)
            if submitted is not None:
                summary, use_id = submitted
                missing = missing_deliverables(
                    s.persona, (f.path for f in self._workspace.changed())
                )
                if not missing:
                    s.transcript.add("submit", turn=turn, summary=summary)
                    s.progress(f"turn {turn}: submitted {len(self._workspace.changed())} files")
                    return summary
                if repaired:
                    raise StepFailed(
                        FailureKind.RETRYABLE,
                        "missing_deliverables",
                        f"missing deliverables: {', '.join(missing)} (after the repair turn)",
                    )
                repaired = True
                text = (
                    f"Not submitted: missing deliverables: {', '.join(missing)}. Write them, "
                    "then call submit again."
                )
                s.transcript.add("submit_refused", turn=turn, missing=missing)
                s.progress(f"turn {turn}: submit refused, missing {', '.join(missing)}")
                results.append(_result(use_id, ToolOutcome(text, is_error=True)))
            messages.append({"role": "user", "content": results})
        raise StepFailed(
            FailureKind.FATAL,
            "max_turns",
            f"{s.model} did not submit within {self._max_turns} turns (MAESTRO_WORKER_MAX_TURNS)",
        )

    async def _continue_cut(self, turn: int, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The turns that continue an answer cut at max_tokens."""
        s = self._s
        cut = content[-1] if content and content[-1]["type"] == "tool_use" else None
        kept = content[:-1] if cut is not None else content
        if not any(b["type"] in ("text", "tool_use") for b in kept):
            kept = [*kept, {"type": "text", "text": "(my answer was cut off here)"}]
        uses = [b for b in kept if b["type"] == "tool_use"]
        results, _ = await self._run_tools(turn, [u for u in uses if u["name"] != SUBMIT])
        results += [
            _result(u["id"], ToolOutcome("not applied: submit in a cut answer", is_error=True))
            for u in uses
            if u["name"] == SUBMIT
        ]
        what = f"in the middle of a {cut['name']} call, which was not applied" if cut else ""
        where = f" {what}" if what else ""
        note = (
            f"Your answer stopped at the output limit ({s.max_tokens} tokens){where}. "
            "Continue from there; write a large file in parts (write_file with the first "
            "part, then write_file with append=true for the rest)."
        )
        s.transcript.add("max_tokens", turn=turn, cut_tool=cut["name"] if cut else None)
        s.progress(f"turn {turn}: answer cut at max_tokens; continuing")
        return [
            {"role": "assistant", "content": kept},
            {"role": "user", "content": [*results, {"type": "text", "text": note}]},
        ]

    async def _run_tools(
        self, turn: int, uses: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """Runs each tool call (submit last); returns the results and the submit."""
        results: list[dict[str, Any]] = []
        submitted: tuple[str, str] | None = None
        for use in uses:
            args = use["input"] if isinstance(use["input"], dict) else {}
            if use["name"] == SUBMIT:
                summary = args.get("summary")
                submitted = (
                    summary if isinstance(summary, str) and summary else "(no summary)",
                    use["id"],
                )
                continue
            outcome = await self._tool(use["name"], args)
            self._s.transcript.add(
                "tool",
                turn=turn,
                name=use["name"],
                input=summarize_input(args),
                is_error=outcome.is_error,
                text=outcome.text if outcome.is_error else outcome.text[:200],
            )
            if outcome.note:
                self._s.progress(outcome.note)
            results.append(_result(use["id"], outcome))
        return results, submitted

    async def _tool(self, name: str, args: dict[str, Any]) -> ToolOutcome:
        ws = self._workspace
        if name == "list_files":
            prefix = args.get("prefix")
            return ws.list_files(prefix if isinstance(prefix, str) else "")
        if name == "read_file":
            return ws.read(args.get("path"), args.get("offset", 0))
        if name == "write_file":
            return ws.write(args.get("path"), args.get("content"), args.get("append", False))
        if name == "edit_file":
            return ws.edit(args.get("path"), args.get("old_text"), args.get("new_text"))
        if name == RUN_CHECKS and self._checks is not None:
            return await self._run_checks()
        return ToolOutcome(f"error: there is no tool {name!r}", is_error=True)

    async def _run_checks(self) -> ToolOutcome:
        assert self._checks is not None
        timeout = min(self._s.remaining() - 1.0, _MAX_CHECK_SECONDS)
        if timeout <= 1.0:
            return ToolOutcome("error: no time left to run the checks", is_error=True)
        try:
            report = await self._checks.run_checks(dict(self._workspace.files), timeout=timeout)
        except MaestroError as err:
            return ToolOutcome(
                f"error: the checks could not run: {err.message}",
                is_error=True,
                note=f"run_checks failed: {err.message}",
            )
        return ToolOutcome(
            f"{report.headline()}\n\n{report.details}".strip(),
            note=f"run_checks: {report.headline()}",
        )


def _result(use_id: str, outcome: ToolOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": outcome.text}
    if outcome.is_error:
        result["is_error"] = True
    return result
