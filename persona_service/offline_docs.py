"""Documents the offline provider writes: requirements, design, test plan, README.

Each is built from the requirement and, where a dependency supplies it, from the
upstream documents and code (requirement ids, delivered modules, file layout).
"""

from __future__ import annotations

import re

from persona_service.offline_context import Context

OFFLINE_NOTE = (
    "_A labelled template demo: written by Maestro's offline provider from deterministic "
    "templates; no model was called and nobody judged it. Review before relying on it._"
)
_FR_HEADING = re.compile(r"^### (FR-\d+): (.+)$", re.MULTILINE)


def quote(text: str) -> str:
    """Returns text as a markdown block quote."""
    return "\n".join(f"> {line}".rstrip() for line in text.strip().splitlines()) or "> (empty)"


def requirement_ids(ctx: Context) -> list[tuple[str, str]]:
    """The functional requirements (id, text): from docs/requirements.md when a
    dependency supplies it, else derived from the requirement like the analyst does."""
    doc = ctx.file("docs/requirements.md")
    if doc is not None:
        found = _FR_HEADING.findall(doc.content)
        if found:
            return [(fr_id, text.strip()) for fr_id, text in found]
    items = [*ctx.items, _crud_item(ctx)]
    return [(f"FR-{i}", item) for i, item in enumerate(items, start=1)]


def _crud_item(ctx: Context) -> str:
    return f"{ctx.resource.capitalize()} can be created, listed, read, updated and deleted"


def requirements_doc(ctx: Context) -> str:
    """docs/requirements.md: numbered requirements with acceptance criteria."""
    out = [f"# Requirements: {ctx.title}", "", OFFLINE_NOTE, "", "## Source requirement", ""]
    out += [quote(ctx.requirement), ""]
    if ctx.instructions:
        out += ["## Step instructions", "", ctx.instructions, ""]
    out += ["## Functional requirements", ""]
    frs = requirement_ids(ctx)
    for number, (fr_id, text) in enumerate(frs, start=1):
        out += [f"### {fr_id}: {text}", ""]
        if text == _crud_item(ctx):
            out += [
                f"- AC-{number}.1: `POST /{ctx.resource}` with a name returns 201 and the "
                f"new {ctx.noun} with an id.",
                f"- AC-{number}.2: `GET /{ctx.resource}` lists every {ctx.noun} in creation order.",
                f"- AC-{number}.3: `PATCH /{ctx.resource}/<id>` changes only the given fields; "
                f"`DELETE` removes the {ctx.noun}; an unknown id gives 404.",
            ]
        else:
            out += [
                f"- AC-{number}.1: A user can observe, through the API or the client, "
                f'that the software does what "{text}" describes.',
                f"- AC-{number}.2: Invalid input for this capability is rejected with a "
                "clear message and changes nothing.",
            ]
        out.append("")
    out += [
        "## Non-functional requirements",
        "",
        "### NFR-1: Standard library only",
        "",
        "- Acceptance: `python -m pytest -q` passes with only Python 3.11+ and pytest.",
        "",
        "### NFR-2: Validated, bounded input",
        "",
        "- Acceptance: malformed JSON, unknown fields and bodies over 64 KiB get HTTP 400.",
        "",
        "### NFR-3: Operable",
        "",
        "- Acceptance: `GET /health` answers 200 with a JSON status while the service runs.",
        "",
        "## Key terms",
        "",
    ]
    out += [f"- {word}" for word in ctx.keywords] or ["- (none found)"]
    out += [
        "",
        "## Assumptions",
        "",
        f"- The central record is the {ctx.noun} (the requirement's most frequent specific "
        "term); other terms are attributes or behaviour.",
        "- Data lives in memory in one process; persistence is out of scope for now.",
        "- Users are trusted local users; authentication is not specified.",
        "",
        "## Open questions",
        "",
        "- Must data survive a restart (which store)?",
        "- Who may use the service, and how do they authenticate?",
        "- What volume and latency are expected?",
    ]
    return "\n".join(out) + "\n"


def architecture_doc(ctx: Context) -> str:
    """docs/architecture.md: components, data model, interface and traceability."""
    r, n = ctx.resource, ctx.noun
    out = [
        f"# Architecture: {ctx.title}",
        "",
        OFFLINE_NOTE,
        "",
        "## Components",
        "",
        f"- `app.store`: the {n} store, thread-safe and in memory; validates all input.",
        "- `app.server`: JSON over HTTP on the standard library's `ThreadingHTTPServer`.",
        f"- `frontend.client`: an HTTP client of the `/{r}` API.",
        "- `frontend.render` and `frontend.cli`: HTML pages and a command line over the client.",
        "",
        "The frontend depends only on the HTTP contract below, never on `app` code.",
        "",
        "## Data model",
        "",
        f"A {n} has `id` (int, assigned by the store), `name` (non-empty string, at most 200 "
        "characters), `done` (bool, default false) and `notes` (string, default empty).",
        "",
        "## HTTP interface",
        "",
        "| method | path | success | errors |",
        "|---|---|---|---|",
        "| GET | `/health` | 200 `{status, count}` | - |",
        f"| GET | `/{r}` (`?done=true/false`) | 200 `{{{r}: [...]}}` | - |",
        f"| POST | `/{r}` | 201, the new {n} | 400 invalid input |",
        f"| GET | `/{r}/<id>` | 200, the {n} | 404 unknown id |",
        f"| PUT/PATCH | `/{r}/<id>` | 200, the changed {n} | 400, 404 |",
        f"| DELETE | `/{r}/<id>` | 204 | 404 |",
        "",
        'Errors are JSON objects `{"error": "<reason>"}`. Bodies are at most 64 KiB.',
        "",
        "## Traceability",
        "",
    ]
    source = "docs/requirements.md" if ctx.file("docs/requirements.md") else "the requirement"
    out.append(f"Requirements as stated in {source}:")
    out.append("")
    for fr_id, text in requirement_ids(ctx):
        out.append(f"- {fr_id} ({text}): `app.store` and `app.server`; shown by `frontend`.")
    return "\n".join(out) + "\n"


def decisions_doc(ctx: Context) -> str:
    """docs/decisions.md: architecture decision records."""
    records = [
        (
            "Standard library only",
            "The service must run anywhere Python runs, and CI must need nothing but pytest.",
            "Use `http.server`, `json`, `threading` and `urllib`; no web framework.",
            "Less routing convenience and no async server; easy to replace later behind "
            "the same HTTP contract.",
        ),
        (
            f"In-memory {ctx.noun} store behind one class",
            "Persistence is an open question (see the requirements).",
            "`app.store.Store` keeps records in a dict under a lock; all validation is there.",
            "Data is lost on restart; a database can replace `Store` without touching HTTP.",
        ),
        (
            "JSON over HTTP as the only contract",
            "The backend and frontend are built in parallel by different developers.",
            f"The `/{ctx.resource}` interface in architecture.md is the contract; the "
            "frontend tests run against a stub of it.",
            "Contract changes must update both sides and this document.",
        ),
    ]
    out = [f"# Architecture decisions: {ctx.title}", "", OFFLINE_NOTE]
    for number, (title, context, decision, consequences) in enumerate(records, start=1):
        out += ["", f"## ADR-{number}: {title}", "", "Status: accepted", ""]
        out += [f"Context: {context}", "", f"Decision: {decision}", ""]
        out.append(f"Consequences: {consequences}")
    return "\n".join(out) + "\n"


def delivered_modules(ctx: Context) -> list[str]:
    """Dotted names of the importable modules among the dependency files.

    Only modules inside packages, never `__main__` (importing it would run the program)
    and never tests.
    """
    packages = set(ctx.packages)
    modules = []
    for file in ctx.python_files:
        parts = file.path.removesuffix(".py").split("/")
        if parts[0] not in packages or parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if all(p.isidentifier() for p in parts):
            modules.append(".".join(parts))
    return sorted(set(modules))


def test_plan_doc(ctx: Context, tests: list[tuple[str, str]], *, crud_tested: bool) -> str:
    """docs/test-plan.md: what is tested, how, and which requirement each test covers.

    Args:
        ctx: The step's context.
        tests: (test name, what it shows) for the automated tests written with the plan.
        crud_tested: The tests exercise creating, listing, updating and deleting records;
            only the requirement about that is then marked automated.
    """
    out = [f"# Test plan: {ctx.title}", "", OFFLINE_NOTE, "", "## Code under test", ""]
    code = [f for f in ctx.files if f.path.endswith(".py")]
    if code:
        out += ["| file | lines |", "|---|---|"]
        out += [f"| `{f.path}` | {len(f.content.splitlines())} |" for f in code]
    else:
        out.append("No code was delivered to this step; the plan below is for manual testing.")
    out += ["", "## Requirements and how they are checked", ""]
    for fr_id, text in requirement_ids(ctx):
        if crud_tested and text == _crud_item(ctx):
            how = "automated (tests/test_acceptance.py)"
        else:
            how = "manual; the automated tests cover generic record handling only"
        out.append(f"- {fr_id}: {text}. Checked: {how}.")
    if tests:
        out += ["", "## Automated acceptance tests", ""]
        out += [f"- `{name}`: {what}" for name, what in tests]
    out += [
        "",
        "## How to run",
        "",
        "From the project root: `python -m pytest -q` (Python 3.11+ and pytest only).",
        "",
        "## Exit criteria",
        "",
        "- Every automated test passes; no test is skipped.",
        "- Each requirement marked manual has been tried once by hand and noted here.",
    ]
    return "\n".join(out) + "\n"


def readme(ctx: Context) -> str:
    """README.md: what the software does and how to install, run, use and test it."""
    packages = ctx.packages
    out = [
        f"# {ctx.title}",
        "",
        quote(ctx.requirement),
        "",
        OFFLINE_NOTE,
        "",
        "## What was asked",
        "",
    ]
    out += [f"- {fr_id}: {text}" for fr_id, text in requirement_ids(ctx)]
    if "app" in packages:
        out += [
            "",
            f"The delivered service keeps {ctx.resource} in memory and serves them as JSON "
            "over HTTP (create, list, read, update, delete); check the other requirements "
            "against docs/test-plan.md.",
        ]
    out += ["", "## Prerequisites", "", "Python 3.11 or newer; pytest to run the tests.", ""]
    if "app" in packages:
        r = ctx.resource
        out += [
            "## Run the service",
            "",
            "```sh",
            "python -m app --port 8000",
            f"curl -s -X POST localhost:8000/{r} -H 'Content-Type: application/json' "
            """-d '{"name": "first"}'""",
            f"curl -s localhost:8000/{r}",
            "```",
            "",
        ]
    if "frontend" in packages:
        out += [
            "## Use the command line",
            "",
            "```sh",
            "python -m frontend --url http://127.0.0.1:8000 add 'first'",
            "python -m frontend --url http://127.0.0.1:8000 list",
            "python -m frontend --url http://127.0.0.1:8000 html > page.html",
            "```",
            "",
        ]
    out += ["## Test", "", "```sh", "python -m pytest -q", "```", "", "## Layout", ""]
    if ctx.files:
        out += [f"- `{f.path}` ({len(f.content.splitlines())} lines)" for f in ctx.files]
    else:
        out.append("No files were given to this step.")
    if ctx.omitted_paths:
        out += ["", "Also in the project (not shown to the writer):", ""]
        out += [f"- `{p}`" for p in ctx.omitted_paths]
    return "\n".join(out) + "\n"
