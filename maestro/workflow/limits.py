"""How much one workflow may ask for, and how much of it an error message repeats.

Workflows arrive over the public API, so every limit here bounds the work (CPU, memory,
message size) one request can cause. The README lists the same numbers.
"""

from __future__ import annotations

from datetime import timedelta

from maestro.text import escape_unprintable

# The YAML text, in UTF-8 bytes.
MAX_WORKFLOW_BYTES = 128 * 1024
# Values in the document with aliases expanded, and how deeply they may nest.
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 32
# Big enough for the DAGs orchestrators are compared on (bench/: 1,000 steps); the
# workflow's byte limit bounds what so many steps can carry.
MAX_STEPS = 1_000
MAX_DEPENDENCIES = 32
# Paths a workflow declares shared between steps.
MAX_SHARED_PATHS = 100
MAX_STEP_ID_CHARS = 63
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 2_000
MAX_INSTRUCTIONS_CHARS = 20_000
# Any other string in the document (a duration, a persona name, a key).
MAX_STRING_CHARS = 20_000
# A step attempt's timeout (per step or the workflow's default), and any retry backoff.
MAX_STEP_TIMEOUT = timedelta(hours=24)
# A whole step's deadline (its attempts and the waits between them).
MAX_STEP_DEADLINE = timedelta(days=7)
MAX_BACKOFF = timedelta(hours=1)
# A step's budget (it travels as int64 tokens and a double of dollars).
MAX_BUDGET_TOKENS = 10**12
MAX_BUDGET_USD = 1_000_000.0

# What an error message may repeat of the input, and how many problems it lists.
MAX_ECHO_CHARS = 200
MAX_PROBLEMS_LISTED = 20
# "did you mean" suggestions per validation; each compares one word with every choice.
MAX_HINTS = 5
MAX_HINT_WORD_CHARS = 64
# Past this many candidates no hint is computed (the cost is words x choices).
MAX_HINT_CHOICES = 100


def shown(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` for a message, cut to about `limit` characters.

    Escapes what a terminal or a log would interpret (control, bidi and lone
    surrogate characters), so echoed input can neither hide nor forge text.
    """
    try:
        text = repr(value[: limit + 1] if isinstance(value, str) else value)
    except ValueError:  # an integer past int_max_str_digits
        return f"<{type(value).__name__} too large to show>"
    # repr escapes control, format and surrogate characters already; the second pass
    # covers the reprs of other types that might not.
    text = escape_unprintable(text)
    return text if len(text) <= limit else text[:limit] + "…"
