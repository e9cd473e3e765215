"""Counts an attempt's model calls, prices them, and holds them to the attempt's budget.

One meter per attempt. Every call is counted when it starts (so a call that fails
before any answer still shows), and its tokens when the API reports them, including
the input tokens of a stream that breaks off. The budget is checked before each call
and after each, so a step stops as soon as it has spent what it may.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from persona_service.catalog import PriceTable
from persona_service.models import Budget, FailureKind, StepFailed, TokenUsage
from persona_service.rate_limits import RateLimits

log = logging.getLogger(__name__)


class UsageMeter:
    """The usage of one attempt so far.

    Args:
        prices: Turns tokens into dollars.
        budget: What the attempt may spend (0 fields: unlimited).
        on_change: Called after each change (the runner turns it into a heartbeat).
    """

    def __init__(
        self,
        prices: PriceTable | None = None,
        budget: Budget | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._prices = prices or PriceTable()
        self.budget = budget or Budget()
        self._on_change = on_change
        self._total = TokenUsage()
        self.unpriced: set[str] = set()
        self.rate_limits: RateLimits | None = None
        """The rate-limit headers of the latest answer (passed on to the scheduler)."""
        self.answer_time: datetime | None = None
        """When the answer to the latest call began (the API had counted it by then);
        None until it does."""

    @property
    def total(self) -> TokenUsage:
        """Everything counted so far."""
        return self._total

    def start_call(self) -> None:
        """Counts a model call about to be made."""
        self._total = self._total + TokenUsage(calls=1)
        self.answer_time = None
        self._changed()

    def record(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read: int = 0,
        cache_write_5m: int = 0,
        cache_write_1h: int = 0,
    ) -> TokenUsage:
        """Adds the tokens the API reported for one call; returns that call's usage."""
        cost = self._prices.cost(
            model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read=cache_read,
            cache_write_5m=cache_write_5m,
            cache_write_1h=cache_write_1h,
        )
        if cost is None:
            if model not in self.unpriced:
                log.warning(
                    "no price for model %s: its cost counts as 0 (set MAESTRO_WORKER_PRICES)",
                    model,
                )
            self.unpriced.add(model)
            cost = 0.0
        call = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_input_tokens=cache_read,
            cache_creation_input_tokens=cache_write_5m + cache_write_1h,
            cost_usd=cost,
        )
        self._total = self._total + call
        self._changed()
        return call

    def answer_began(self) -> None:
        """The API answered the latest call (headers or an error arrived): it counted
        the call."""
        if self.answer_time is None:
            self.answer_time = datetime.now(UTC)

    def report(self) -> RateLimits | None:
        """What the scheduler learns about the API's limits so far, and when the
        latest call reached it (the scheduler admits each call, and settles each)."""
        if self.answer_time is None:
            return self.rate_limits
        found = self.rate_limits or RateLimits(model="")
        return found.model_copy(update={"first_answer_time": self.answer_time})

    def check_budget(self, when: str) -> None:
        """Fails the attempt when its budget is spent.

        Args:
            when: What was about to happen, for the message ("before turn 4").

        Raises:
            StepFailed: BUDGET_EXCEEDED, with the spend so far.
        """
        spent = self._total
        limit = self.budget
        if limit.max_tokens and spent.total_tokens >= limit.max_tokens:
            raise StepFailed(
                FailureKind.BUDGET_EXCEEDED,
                "budget_tokens",
                f"the step's token budget is spent {when}: {spent.total_tokens} of "
                f"{limit.max_tokens} tokens used (${spent.cost_usd:.4f}, {spent.calls} calls)",
                usage=spent,
            )
        if limit.max_usd and spent.cost_usd >= limit.max_usd:
            raise StepFailed(
                FailureKind.BUDGET_EXCEEDED,
                "budget_usd",
                f"the step's budget is spent {when}: ${spent.cost_usd:.4f} of "
                f"${limit.max_usd:.4f} used ({spent.total_tokens} tokens, {spent.calls} calls)",
                usage=spent,
            )

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
