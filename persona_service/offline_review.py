"""The offline reviews: real, simple static checks of the files a reviewer was given.

Python files are parsed with `ast` (never executed); every finding names a file and a
line. The checks are deliberately plain (patterns a reviewer would grep for), and the
reviews say so.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from persona_service.models import TextFile
from persona_service.offline_context import Context
from persona_service.offline_docs import OFFLINE_NOTE

MAX_LINE = 100
_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}

# (severity, pattern, what is wrong and the fix). Applied to every line of code files.
_SECURITY_PATTERNS = [
    ("high", re.compile(r"\b(eval|exec)\("), "dynamic code execution; parse data instead"),
    ("high", re.compile(r"shell\s*=\s*True"), "shell=True; pass an argument list instead"),
    (
        "high",
        re.compile(r"""(?i)(password|secret|api_key|token)\s*=\s*['"][^'"]{4,}['"]"""),
        "a hard-coded secret; read it from the environment or a secret store",
    ),
    ("medium", re.compile(r"\bpickle\.loads?\("), "unpickling can run code; use JSON"),
    (
        "medium",
        re.compile(r"\byaml\.load\((?![^)]*SafeLoader)"),
        "yaml.load without SafeLoader; use yaml.safe_load",
    ),
    ("low", re.compile(r"0\.0\.0\.0"), "binds every interface; fine in a container only"),
]
_CODE_SUFFIXES = (".py", ".sh", ".toml", ".cfg", ".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Finding:
    """One review finding at a file and line (line 0: the whole file)."""

    severity: str
    path: str
    line: int
    text: str

    def render(self, number: int, prefix: str) -> str:
        """Returns the finding as a markdown list item."""
        where = f"`{self.path}:{self.line}`" if self.line else f"`{self.path}`"
        return f"- {prefix}-{number} [{self.severity}] {where}: {self.text}"


@dataclass(frozen=True)
class FileStats:
    """Size and shape of one file."""

    path: str
    lines: int
    size: int
    functions: int = 0
    classes: int = 0
    tests: int = 0
    undocumented: int = 0
    syntax_error: str | None = None


def _is_code(file: TextFile) -> bool:
    name = file.path.rsplit("/", 1)[-1]
    return file.path.endswith(_CODE_SUFFIXES) or name in ("Dockerfile", "run")


def file_stats(file: TextFile) -> FileStats:
    """Counts lines and, for Python, functions, classes, tests and missing docstrings."""
    base = FileStats(file.path, len(file.content.splitlines()), len(file.content.encode()))
    if not file.path.endswith(".py"):
        return base
    try:
        tree = ast.parse(file.content, filename=file.path)
    except SyntaxError as err:
        return FileStats(base.path, base.lines, base.size, syntax_error=f"line {err.lineno}")
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    public = [n for n in funcs + classes if not n.name.startswith(("_", "test_", "do_"))]
    return FileStats(
        path=base.path,
        lines=base.lines,
        size=base.size,
        functions=len(funcs),
        classes=len(classes),
        tests=sum(1 for f in funcs if f.name.startswith("test_")),
        undocumented=sum(1 for n in public if ast.get_docstring(n) is None),
    )


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.path, f.line, f.text))


def security_findings(files: tuple[TextFile, ...]) -> list[Finding]:
    """Pattern checks for common security flaws, plus checks of HTTP handlers."""
    findings: list[Finding] = []
    for file in files:
        if not _is_code(file):
            continue
        for number, line in enumerate(file.content.splitlines(), start=1):
            for severity, pattern, text in _SECURITY_PATTERNS:
                if pattern.search(line):
                    findings.append(Finding(severity, file.path, number, text))
        if "BaseHTTPRequestHandler" in file.content and "tests/" not in file.path:
            if "Content-Length" in file.content and "MAX_BODY" not in file.content:
                findings.append(
                    Finding("medium", file.path, 0, "request bodies have no size limit")
                )
            if "Authorization" not in file.content:
                findings.append(
                    Finding(
                        "medium",
                        file.path,
                        0,
                        "HTTP handlers check no credentials; add authentication before "
                        "exposing the service beyond localhost",
                    )
                )
        if file.path.endswith("Dockerfile") and "\nUSER " not in file.content:
            findings.append(Finding("medium", file.path, 0, "the container runs as root"))
    return _sorted(findings)


def code_findings(files: tuple[TextFile, ...], stats: list[FileStats]) -> list[Finding]:
    """Correctness and clarity checks: syntax, bare excepts, TODOs, long lines, tests."""
    findings: list[Finding] = []
    for stat in stats:
        if stat.syntax_error:
            findings.append(Finding("high", stat.path, 0, f"syntax error at {stat.syntax_error}"))
        if stat.undocumented:
            findings.append(
                Finding(
                    "low", stat.path, 0, f"{stat.undocumented} public definitions lack docstrings"
                )
            )
    for file in files:
        if not file.path.endswith(".py"):
            continue
        for number, line in enumerate(file.content.splitlines(), start=1):
            stripped = line.strip()
            if stripped == "except:" or stripped.startswith("except: "):
                findings.append(Finding("high", file.path, number, "bare except hides errors"))
            if re.search(r"\b(TODO|FIXME|XXX)\b", line):
                findings.append(Finding("medium", file.path, number, "unfinished work marker"))
            if len(line) > MAX_LINE:
                findings.append(
                    Finding("low", file.path, number, f"line longer than {MAX_LINE} characters")
                )
    tested = " ".join(f.content for f in files if f.path.startswith("tests/"))
    for package in sorted({f.path.split("/", 1)[0] for f in files if "/" in f.path}):
        if package in ("tests", "docs") or not any(
            f.path.startswith(f"{package}/") and f.path.endswith(".py") for f in files
        ):
            continue
        if f"from {package}" not in tested and f"import {package}" not in tested:
            findings.append(
                Finding("high", f"{package}/", 0, "no test in the files given imports it")
            )
    return _sorted(findings)


def _files_table(stats: list[FileStats]) -> list[str]:
    rows = ["| file | lines | bytes | functions | classes | tests |", "|---|---|---|---|---|---|"]
    rows += [
        f"| `{s.path}` | {s.lines} | {s.size} | {s.functions} | {s.classes} | {s.tests} |"
        for s in stats
    ]
    return rows


def _findings_section(findings: list[Finding], prefix: str) -> list[str]:
    if not findings:
        return ["No findings from the automated checks."]
    return [f.render(i, prefix) for i, f in enumerate(findings, start=1)]


def security_review(ctx: Context) -> tuple[str, list[Finding]]:
    """docs/security-review.md and its findings."""
    stats = [file_stats(f) for f in ctx.files]
    findings = security_findings(ctx.files)
    out = [f"# Security review: {ctx.title}", "", OFFLINE_NOTE, "", "## Scope", ""]
    if stats:
        out.append(f"{len(stats)} files, {sum(s.lines for s in stats)} lines reviewed:")
        out += ["", *_files_table(stats)]
    else:
        out.append("No files were given to this review; only the requirement was considered.")
    if ctx.omitted_paths:
        out += ["", "Not reviewed (left out of this step's context):", ""]
        out += [f"- `{p}`" for p in ctx.omitted_paths]
    out += ["", "## Findings", "", *_findings_section(findings, "S")]
    out += [
        "",
        "## Method",
        "",
        "Line patterns for dynamic code execution, shell injection, hard-coded secrets, "
        "unsafe deserialisation and wide binds; HTTP handlers checked for body limits "
        "and authentication; Dockerfiles for a non-root user. A human review of data "
        "flows should follow.",
    ]
    return "\n".join(out) + "\n", findings


def code_review(ctx: Context) -> tuple[str, list[Finding], bool]:
    """docs/code-review.md, its findings and whether the checks found a blocking one.

    A template cannot judge code, so the review makes no merge decision: it reports
    what its static checks found, and says it is a template.
    """
    stats = [file_stats(f) for f in ctx.files]
    findings = code_findings(ctx.files, stats)
    blocking = [f for f in findings if f.severity == "high"]
    has_code = any(f.path.endswith(".py") for f in ctx.files)
    clean = has_code and not blocking
    out = [f"# Code review: {ctx.title}", "", OFFLINE_NOTE, "", "## Files reviewed", ""]
    if stats:
        out += _files_table(stats)
        tests = sum(s.tests for s in stats)
        out += ["", f"{len(stats)} files, {sum(s.lines for s in stats)} lines, {tests} tests."]
    else:
        out.append("No files were given to this review.")
    if ctx.omitted_paths:
        out += ["", "Not reviewed (left out of this step's context):", ""]
        out += [f"- `{p}`" for p in ctx.omitted_paths]
    out += ["", "## Findings", "", *_findings_section(findings, "C"), "", "## Verdict", ""]
    if clean:
        out.append(
            "No blocking (high) findings from the automated checks above. This is a "
            "template review and makes no merge decision: the code's tests, lint and "
            "compilation are judged by the run's gate, and a human or model review "
            "should decide."
        )
    elif not has_code:
        out.append("Nothing to decide: no code was given to this review.")
    else:
        out.append(f"Changes requested: {len(blocking)} blocking finding(s) above.")
    return "\n".join(out) + "\n", findings, clean
