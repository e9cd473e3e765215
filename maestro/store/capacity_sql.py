"""The transactions of the shared model capacity account (PostgreSQL, or one SQLite
file): the scheduler decides, the store keeps the rows and the lock.

Every lease locks the model's row (`capacity_models`, FOR UPDATE on PostgreSQL; SQLite
locks the file), so schedulers lease one after another and never both spend what is
left. Times are microseconds since the epoch, like everywhere in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from maestro.store.db import Tx

Amount = tuple[float, float, float]
"""(requests, input tokens, output tokens)."""


@dataclass(frozen=True, slots=True)
class GrantRow:
    granted_time: int
    until_time: int
    amount: Amount


Decide = Callable[[list[GrantRow], int, int], "tuple[Amount | None, float, str]"]
"""(grants in the window, paused until, now) -> (amount to grant, or None; wait; why)."""


def _lock_model(tx: Tx, model: str) -> int:
    """Locks the model's row (creating it) and returns its pause."""
    tx.execute(
        "INSERT INTO capacity_models (model, paused_until) VALUES (?, 0) ON CONFLICT DO NOTHING",
        (model,),
    )
    row = tx.one(
        "SELECT paused_until FROM capacity_models WHERE model = ?" + tx.for_update, (model,)
    )
    assert row is not None
    return int(row["paused_until"])


def _grants(tx: Tx, model: str, window_us: int) -> list[GrantRow]:
    # Grants out of every window are no use to anyone: dropped as we go.
    tx.execute(
        "DELETE FROM capacity_grants WHERE model = ? AND until_time <= ?",
        (model, tx.now - window_us),
    )
    return [
        GrantRow(
            int(r["granted_time"]),
            int(r["until_time"]),
            (float(r["requests"]), float(r["input_tokens"]), float(r["output_tokens"])),
        )
        for r in tx.all(
            "SELECT granted_time, until_time, requests, input_tokens, output_tokens"
            " FROM capacity_grants WHERE model = ?",
            (model,),
        )
    ]


def _insert(tx: Tx, model: str, until_time: int, amount: Amount) -> int:
    row = tx.one(
        "INSERT INTO capacity_grants (model, granted_time, until_time, requests, input_tokens,"
        " output_tokens) VALUES (?, ?, ?, ?, ?, ?) RETURNING grant_id",
        (model, tx.now, until_time, *amount),
    )
    assert row is not None
    return int(row["grant_id"])


def lease(
    tx: Tx,
    model: str,
    window_us: int,
    until_time: int,
    decide: Decide,
    give_back: tuple[int, Amount] | None,
) -> tuple[int | None, Amount | None, float, str, int]:
    """Leases what `decide` grants, under the model's lock.

    Args:
        give_back: (grant id, amount) a scheduler's expired lease did not use: taken
            off that grant first (it was never spent, so no window holds it).

    Returns:
        (grant id, amount granted, wait, why, paused until): id and amount None when
        nothing fits now.
    """
    paused_until = _lock_model(tx, model)
    if give_back is not None:
        grant_id, unused = give_back
        tx.execute(
            "UPDATE capacity_grants SET requests = requests - ?, input_tokens = input_tokens - ?,"
            " output_tokens = output_tokens - ? WHERE grant_id = ?",
            (*unused, grant_id),
        )
    rows = _grants(tx, model, window_us)
    amount, wait, why = decide(rows, paused_until, tx.now)
    if amount is None:
        return None, None, wait, why, paused_until
    return _insert(tx, model, until_time, amount), amount, 0.0, "", paused_until


def settle(tx: Tx, model: str, grant_id: int, reached: int, over: Amount | None) -> None:
    """A call admitted from lease `grant_id` ended: the lease counts at least until the
    call `reached` the API, and usage beyond the estimate (`over`) is charged."""
    tx.execute(
        "UPDATE capacity_grants SET until_time = ? WHERE grant_id = ? AND until_time < ?",
        (reached, grant_id, reached),
    )
    if over is not None:
        _insert(tx, model, tx.now, over)


def observe(
    tx: Tx,
    model: str,
    window_us: int,
    paused_until: int,
    external: Callable[[list[GrantRow], int], tuple[Amount, int] | None],
) -> int:
    """Applies what the API said: a later pause, and usage we did not see (`external`
    turns the rows into (amount, until) to charge, or None). Returns the pause."""
    current = _lock_model(tx, model)
    if paused_until > current:
        tx.execute(
            "UPDATE capacity_models SET paused_until = ? WHERE model = ?", (paused_until, model)
        )
        current = paused_until
    found = external(_grants(tx, model, window_us), tx.now)
    if found is not None:
        amount, until_time = found
        _insert(tx, model, until_time, amount)
    return current
