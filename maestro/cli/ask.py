"""`maestro run --interactive`: asks at once when a step waits for a decision.

The answer is read from the terminal without blocking the event loop (a reader on
stdin, not a thread), so the run's events keep printing and a run that ends while the
question is open leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable

from maestro.cli.gateway_client import GatewayClient
from maestro.core.errors import MaestroError

QUESTION = "approve {step}? [y]es, [n]o (reject with a comment), [c]omment then decide: "


async def read_line(prompt: str) -> str:
    """One line typed on the terminal (without its newline); "" at end of input."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    fd = sys.stdin.fileno()

    def ready() -> None:
        if not answer.done():
            answer.set_result(sys.stdin.readline())

    loop.add_reader(fd, ready)
    try:
        line = await answer
    finally:
        loop.remove_reader(fd)
    return line.rstrip("\n")


async def ask_decision(
    client: GatewayClient,
    run: str,
    step_id: str,
    say: Callable[[str], None],
    read: Callable[[str], Awaitable[str]] = read_line,
) -> None:
    """Asks y/n/comment for `step_id` until there is an answer, then sends it."""
    comment = ""
    while True:
        answer = (await read(QUESTION.format(step=step_id))).strip().lower()
        if answer in ("c", "comment"):
            comment = (await read("comment: ")).strip()
            continue
        if answer in ("y", "yes"):
            approve = True
        elif answer in ("n", "no"):
            approve = False
            while not comment:
                comment = (await read("what is wrong (required): ")).strip()
        else:
            say("answer y, n or c")
            continue
        break
    try:
        await client.decide_step(
            run, step_id, approve=approve, comment=comment, request_id=uuid.uuid4().hex
        )
    except MaestroError as err:
        say(f"error: could not decide {step_id}: {err.message}")
        return
    say(f"{'approved' if approve else 'rejected'} {step_id}")
