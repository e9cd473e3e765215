"""The Anthropic provider: runs a step in document mode or code mode on Claude.

Document personas make one call answered with typed structured output (see
persona_service.documents); code personas run a bounded agent loop with file tools
(persona_service.agent_loop). The mode is the persona's unless the request says
otherwise; the model and effort are the request's, else the worker's defaults. Every
failure is a StepFailed carrying the attempt's usage and transcript so far.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from maestro.personas import Persona, PersonaMode
from persona_service.agent_loop import AgentLoop
from persona_service.call_admission import CallAdmission
from persona_service.catalog import ModelPrice, PriceTable
from persona_service.checks import CheckRunner
from persona_service.claude import Claude
from persona_service.context import choose_context, starting_point
from persona_service.document_step import run_document
from persona_service.documents import document_kind
from persona_service.models import (
    ProgressCallback,
    StepFailed,
    StepOutput,
    StepRequest,
)
from persona_service.prompts import build_prompt
from persona_service.session import Session
from persona_service.tools import Workspace
from persona_service.transcript import Transcript
from persona_service.usage import UsageMeter

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"


class AnthropicProvider:
    """Runs steps with Claude through the official async SDK.

    Args:
        api_key: The Anthropic API key.
        model: The model when the request names none.
        base_url: Another API endpoint (a proxy, or the fake in tests).
        max_tokens: The output budget of one call.
        max_retries: Retries inside the SDK (0: the scheduler owns retries).
        progress_every: Seconds between "writing" notes while an answer streams in.
        effort: The effort level when the request names none ("": the model's default).
        idle_timeout: Seconds a stream may stay silent before the attempt is given up.
        quiet_note_every: While a stream is silent, a progress note says so this often.
        overload_retry_after: The retry hint for overload when the API gives none.
        max_turns: The most calls one agent-loop attempt may make.
        context_budget_bytes: The most file content a prompt shows.
        prices: Prices laid over the built-in table.
        checks: Runs the sandbox checks for the run_checks tool; None: no such tool.
    """

    name: str = "anthropic"

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str | None = None,
        max_tokens: int = 32000,
        max_retries: int = 0,
        progress_every: float = 5.0,
        effort: str = "",
        idle_timeout: float = 90.0,
        quiet_note_every: float = 60.0,
        overload_retry_after: float = 30.0,
        max_turns: int = 40,
        context_budget_bytes: int = 128 * 1024,
        prices: Mapping[str, ModelPrice] | None = None,
        checks: CheckRunner | None = None,
    ) -> None:
        self._model = model
        self._effort = effort
        self._max_tokens = max_tokens
        self._max_turns = max_turns
        self._context_budget = context_budget_bytes
        self._prices = PriceTable(prices)
        self._checks = checks
        self._claude = Claude(
            api_key,
            base_url=base_url,
            idle_timeout=idle_timeout,
            overload_retry_after=overload_retry_after,
            progress_every=progress_every,
            quiet_note_every=quiet_note_every,
            max_retries=max_retries,
        )

    @property
    def model(self) -> str:
        """The default model."""
        return self._model

    @property
    def prices(self) -> PriceTable:
        """The price table usage is costed with."""
        return self._prices

    async def aclose(self) -> None:
        """Closes the SDK's HTTP connections; call once when the worker shuts down."""
        await self._claude.aclose()

    async def run(
        self,
        request: StepRequest,
        persona: Persona,
        *,
        timeout: float,  # noqa: ASYNC109 - the Provider protocol's explicit budget
        progress: ProgressCallback,
        meter: UsageMeter | None = None,
        admission: CallAdmission | None = None,
    ) -> StepOutput:
        """Runs one step attempt in the persona's (or the request's) mode.

        Raises:
            StepFailed: for every failure, with the attempt's usage and transcript.
        """
        model = request.model or self._model
        effort = request.effort or self._effort
        mode = request.mode or persona.mode
        meter = meter or UsageMeter(self._prices, request.budget)
        transcript = Transcript()
        session = Session(
            claude=self._claude,
            request=request,
            persona=persona,
            model=model,
            effort=effort,
            max_tokens=self._max_tokens,
            meter=meter,
            progress=progress,
            transcript=transcript,
            deadline=asyncio.get_running_loop().time() + timeout,
            admission=admission,
        )
        start = starting_point(request)
        context = choose_context(persona, start, self._context_budget)
        prompt = build_prompt(request, persona, context, mode, with_checks=self._checks is not None)
        transcript.add(
            "start",
            model=model,
            effort=effort or "default",
            mode=str(mode),
            shown=[f.path for f in (*context.shared, *context.files)],
            left_out=list(context.left_out),
        )
        log.debug("step %s prompt:\n%s", request.step_id, prompt.text())
        shown = len(context.shared) + len(context.files)
        left = f", {len(context.left_out)} left out" if context.left_out else ""
        progress(
            f"calling {model} ({mode} mode{', effort ' + effort if effort else ''}; "
            f"{shown} files in context{left})"
        )
        verdict, findings = None, ""
        try:
            if mode is PersonaMode.DOCUMENT:
                rendered, files = await run_document(session, prompt, document_kind(persona))
                summary, verdict, findings = rendered.summary, rendered.verdict, rendered.findings
            else:
                workspace = Workspace(
                    start.files,
                    owned=request.owned_paths,
                    shared=request.shared_paths,
                    unseen=start.unseen,
                )
                loop = AgentLoop(session, workspace, max_turns=self._max_turns, checks=self._checks)
                summary = await loop.run(prompt)
                files = workspace.changed()
        except StepFailed as failure:
            transcript.add("failure", reason=failure.reason, kind=str(failure.kind))
            failure.usage = meter.total
            failure.transcript = transcript.to_bytes()
            failure.model = failure.model or model
            raise
        return StepOutput(
            summary=summary,
            files=files,
            usage=meter.total,
            provider=self.name,
            model=model,
            transcript=transcript.to_bytes(),
            verdict=verdict,
            findings=findings,
        )
