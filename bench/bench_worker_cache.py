"""Tokens, prompt-cache hit ratio and cost of one `sdlc-parallel` run's worker calls.

    python -m bench.bench_worker_cache [--out bench/WORKER_CACHE.md]

Runs the six steps of `sdlc-parallel` (requirements -> architecture -> backend and
frontend at the same time -> testing -> review) through the real persona worker (its
gRPC servicer in process, the real SDK) against the fake Messages API, twice: with
the prompt cache (the fake honours the worker's cache_control breakpoints, with
Claude Sonnet 5.5's 512-token minimum) and without it (the fake ignores them, so
every input token is billed at the base rate, as for a worker that sets none). Each
step's workspace is the run's artifact tree so far, as the scheduler will send it.

The model's answers are scripted with realistic sizes (a 14-requirement document, a
design with interfaces and decisions, a backend and a client of four to six files
each written over several turns, a test plan with acceptance tests, a review with
findings), so prompts grow as a real run's do. The fake counts one token per four
characters of JSON; costs use the worker's price table for claude-sonnet-5-5.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maestro.api.worker.v1 import worker_pb2
from tests.fakes import FakeAnthropic, JsonAnswer, ToolCall, ToolCalls
from tests.integration.worker_harness import running_worker, step_request

REQUIREMENT = (
    "A REST API with user registration and login for a small team's shared todo list: "
    "users register with an email and a password, log in to get a token, and create, "
    "list, complete and delete todos; a command-line client talks to the API. Passwords "
    "are stored hashed; tokens expire after an hour; every error is a JSON body."
)


def _code(name: str, size: int) -> str:
    """Python-looking text of about `size` bytes."""
    lines = [
        f'"""{name}: generated for the benchmark."""',
        "",
        "from __future__ import annotations",
        "",
    ]
    i = 0
    while sum(len(line) + 1 for line in lines) < size:
        lines += [
            f"def handler_{i}(request: dict[str, object]) -> dict[str, object]:",
            f'    """Handles case {i} of {name}."""',
            "    if not request.get('token'):",
            f"        return {{'status': 401, 'error': 'missing token for case {i}'}}",
            f"    return {{'status': 200, 'case': {i}, 'name': '{name}'}}",
            "",
        ]
        i += 1
    return "\n".join(lines) + "\n"


def _prose(topic: str, size: int) -> str:
    sentence = f"The {topic} must behave predictably under load and report every error clearly. "
    return (sentence * (size // len(sentence) + 1))[:size]


def _requirements() -> dict[str, Any]:
    return {
        "summary": "Fourteen requirements for the todo API and its client.",
        "title": "Team todo API",
        "overview": _prose("service", 800),
        "requirements": [
            {
                "id": f"{'FR' if i < 10 else 'NFR'}-{i + 1}",
                "kind": "functional" if i < 10 else "non_functional",
                "title": f"Requirement {i + 1}",
                "statement": _prose(f"feature {i + 1}", 220),
                "concerns": ["backend", "client"] if i % 2 else ["backend"],
                "priority": "must" if i < 8 else "should",
                "acceptance_criteria": [_prose(f"criterion {i}.{j}", 140) for j in range(3)],
            }
            for i in range(14)
        ],
        "assumptions": [_prose("assumption", 120) for _ in range(4)],
        "open_questions": [_prose("question", 120) for _ in range(3)],
    }


def _architecture() -> dict[str, Any]:
    def operation(i: int) -> dict[str, Any]:
        return {
            "name": f"Operation {i}",
            "signature": f"POST /v1/todos/{i}",
            "input": _prose("request body", 160),
            "output": _prose("response body", 160),
            "errors": [_prose("error case", 90) for _ in range(2)],
        }

    return {
        "summary": "A standard-library HTTP API with a token store and a CLI client.",
        "title": "Team todo API",
        "overview": _prose("architecture", 1200),
        "components": [
            {"name": n, "responsibility": _prose(n, 200), "paths": [p]}
            for n, p in (("api", "app/"), ("store", "app/"), ("auth", "app/"), ("cli", "frontend/"))
        ],
        "data_model": [
            {
                "name": entity,
                "description": _prose(entity, 150),
                "fields": [
                    {"name": f"field_{k}", "type": "str", "description": _prose("field", 80)}
                    for k in range(5)
                ],
            }
            for entity in ("User", "Todo", "Token")
        ],
        "interfaces": [
            {
                "name": name,
                "kind": "http",
                "provided_by": "api",
                "used_by": ["cli"],
                "description": _prose(name, 300),
                "operations": [operation(i) for i in range(6)],
            }
            for name in ("Accounts API", "Todos API")
        ],
        "decisions": [
            {
                "id": f"ADR-{i + 1}",
                "title": f"Decision {i + 1}",
                "status": "accepted",
                "context": _prose("context", 300),
                "decision": _prose("decision", 200),
                "consequences": _prose("consequence", 200),
            }
            for i in range(5)
        ],
        "requirement_coverage": [
            {"requirement_id": f"FR-{i + 1}", "how": _prose("coverage", 100)} for i in range(10)
        ],
    }


def _review() -> dict[str, Any]:
    return {
        "summary": "Changes requested: two high findings.",
        "verdict": "changes_requested",
        "assessment": _prose("codebase", 900),
        "findings": [
            {
                "severity": ("high", "medium", "low")[i % 3],
                "path": "app/api.py",
                "line": 10 + i,
                "title": f"Finding {i}",
                "detail": _prose("finding", 250),
                "fix": _prose("fix", 150),
            }
            for i in range(8)
        ],
        "strengths": [_prose("strength", 120) for _ in range(3)],
    }


def _writes(files: dict[str, int]) -> ToolCalls:
    return ToolCalls(
        tuple(
            ToolCall("write_file", {"path": p, "content": _code(p, n)}) for p, n in files.items()
        ),
        text="Writing the next files.",
    )


def _submit(summary: str) -> ToolCalls:
    return ToolCalls((ToolCall("submit", {"summary": summary}),))


def script(fake: FakeAnthropic) -> None:
    """The model's answers for the six steps, routed by persona."""
    fake.push_when("You are the requirements analyst", JsonAnswer(_requirements()))
    fake.push_when("You are the solution architect", JsonAnswer(_architecture()))
    backend = "You are the backend developer"
    fake.push_when(backend, _writes({"app/__init__.py": 300, "app/store.py": 5000}))
    fake.push_when(backend, _writes({"app/api.py": 9000, "app/server.py": 3000}))
    fake.push_when(
        backend, _writes({"tests/test_backend_store.py": 5000, "tests/test_backend_api.py": 7000})
    )
    fake.push_when(
        backend,
        ToolCalls(
            (
                ToolCall(
                    "edit_file",
                    {
                        "path": "app/api.py",
                        "old_text": "def handler_0(",
                        "new_text": "def handle_root(",
                    },
                ),
            )
        ),
    )
    fake.push_when(backend, _submit("The API, its store and their tests."))
    frontend = "You are the frontend developer"
    fake.push_when(frontend, _writes({"frontend/__init__.py": 300, "frontend/client.py": 6000}))
    fake.push_when(frontend, _writes({"frontend/render.py": 3000, "frontend/cli.py": 4000}))
    fake.push_when(frontend, _writes({"tests/test_frontend.py": 6000}))
    fake.push_when(frontend, _submit("The client, its CLI and tests."))
    qa = "You are the QA engineer"
    fake.push_when(qa, ToolCalls((ToolCall("read_file", {"path": "app/api.py"}),)))
    fake.push_when(qa, _writes({"docs/test-plan.md": 6000}))
    fake.push_when(qa, _writes({"tests/test_acceptance.py": 10000}))
    fake.push_when(qa, _submit("A test plan and acceptance tests."))
    fake.push_when("You are the code reviewer", JsonAnswer(_review()))


@dataclass
class StepUsage:
    step: str
    calls: int
    input: int
    cache_read: int
    cache_write: int
    output: int
    cost: float


@dataclass
class RunUsage:
    steps: list[StepUsage] = field(default_factory=list)

    def total(self) -> StepUsage:
        return StepUsage(
            "total",
            sum(s.calls for s in self.steps),
            sum(s.input for s in self.steps),
            sum(s.cache_read for s in self.steps),
            sum(s.cache_write for s in self.steps),
            sum(s.output for s in self.steps),
            sum(s.cost for s in self.steps),
        )


STEPS = [
    ("requirements", "requirements_analyst", ()),
    ("architecture", "solution_architect", ("requirements",)),
    ("backend", "backend_developer", ("architecture",)),
    ("frontend", "frontend_developer", ("architecture",)),
    ("testing", "qa_engineer", ("backend", "frontend")),
    ("review", "code_reviewer", ("testing",)),
]


async def one_run(caching: bool) -> RunUsage:
    usage = RunUsage()
    tree: dict[str, str] = {}
    with FakeAnthropic(min_cacheable_tokens=512, caching=caching) as fake:
        script(fake)
        async with running_worker(fake) as worker:

            async def step(step_id: str, persona: str) -> None:
                request = step_request(
                    persona, step_id=step_id, requirement=REQUIREMENT, workspace=dict(tree)
                )
                outcome = await worker.execute(request, timeout=120)
                if outcome.final.WhichOneof("kind") != "result":
                    raise SystemExit(f"step {step_id} failed: {outcome.final}")
                result: worker_pb2.StepResult = outcome.result
                u = result.usage
                usage.steps.append(
                    StepUsage(
                        step_id,
                        u.calls,
                        u.input_tokens,
                        u.cache_read_input_tokens,
                        u.cache_creation_input_tokens,
                        u.output_tokens,
                        u.cost_usd,
                    )
                )
                tree.update(outcome.files())

            await step("requirements", "requirements_analyst")
            await step("architecture", "solution_architect")
            await asyncio.gather(
                step("backend", "backend_developer"), step("frontend", "frontend_developer")
            )
            await step("testing", "qa_engineer")
            await step("review", "code_reviewer")
        if fake.pending:
            raise SystemExit(f"{fake.pending} scripted answers were not used")
    return usage


def _ratio(s: StepUsage) -> str:
    prompt = s.input + s.cache_read + s.cache_write
    return f"{100 * s.cache_read / prompt:.0f}%" if prompt else "-"


def render(cached: RunUsage, uncached: RunUsage) -> str:
    rows = [
        "| step | calls | input | cache read | cache write | output | cache hit "
        "| cost, cached | cost, no cache |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_step = {s.step: s for s in uncached.steps}
    for s in [*cached.steps, cached.total()]:
        plain = by_step.get(s.step) or uncached.total()
        rows.append(
            f"| {s.step} | {s.calls} | {s.input:,} | {s.cache_read:,} | {s.cache_write:,} | "
            f"{s.output:,} | {_ratio(s)} | ${s.cost:.4f} | ${plain.cost:.4f} |"
        )
    total, plain = cached.total(), uncached.total()
    prompt = total.input + total.cache_read + total.cache_write
    return "\n".join(
        [
            "# Worker calls of one sdlc-parallel run: tokens, cache, cost",
            "",
            "Generated by `python -m bench.bench_worker_cache` (see its docstring for the",
            "method). claude-sonnet-5-5 prices: $2 input, $2.50 cache write (5 min), $0.10",
            "cache read, $10 output per million tokens.",
            "",
            *rows,
            "",
            f"Prompt tokens {prompt:,} either way ({plain.input:,} billed as input without the "
            f"cache); {100 * total.cache_read / prompt:.0f}% of them read from the cache, "
            f"{100 * total.cache_write / prompt:.0f}% written to it. Cost ${total.cost:.4f} with "
            f"the cache, ${plain.cost:.4f} without ({100 * (1 - total.cost / plain.cost):.0f}% "
            "less).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("bench/WORKER_CACHE.md"))
    args = parser.parse_args(argv)
    cached = asyncio.run(one_run(caching=True))
    uncached = asyncio.run(one_run(caching=False))
    text = render(cached, uncached)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
