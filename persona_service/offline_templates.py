"""Source files the offline provider writes for the developer personas.

The backend is an in-memory record service with JSON over http.server (standard
library only; its tests run with nothing but Python and pytest) and the devops files
package it. The resource name comes from the requirement, so the backend and the
frontend (offline_frontend) agree on the HTTP contract without seeing each other.
"""

from __future__ import annotations

import json
from string import Template

from persona_service.offline_context import Context

# Marks of the backend interface the QA templates test; code written by another
# provider lacks them and only gets the generic import checks.
BACKEND_MARKERS = {"app/store.py": "class Store", "app/server.py": "def make_server"}
FRONTEND_MARKERS = {
    "frontend/client.py": "class ApiClient",
    "frontend/render.py": "def render_page",
}

PACKAGE_INIT_TEMPLATE = '''"""${doc}

Generated offline by Maestro; standard library only.
"""

RESOURCE = "${resource}"
TITLE = ${title}
'''

_STORE = '''"""Thread-safe in-memory storage of ${resource}."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

MAX_NAME_LENGTH = 200
FIELDS = ("name", "done", "notes")


class ValidationFailed(ValueError):
    """The input is not a valid ${noun}; the message says why."""


class NotFound(LookupError):
    """No ${noun} has this id."""


@dataclass(frozen=True)
class Record:
    """One ${noun}."""

    id: int
    name: str
    done: bool = False
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Returns the JSON form of the ${noun}."""
        return {"id": self.id, "name": self.name, "done": self.done, "notes": self.notes}


def validate(fields: Any, *, partial: bool) -> dict[str, Any]:
    """Returns the checked fields of a create (partial=False) or update (partial=True)."""
    if not isinstance(fields, dict):
        raise ValidationFailed("expected a JSON object")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValidationFailed(f"unknown field(s): {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    if "name" in fields or not partial:
        name = fields.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed("name must be a non-empty string")
        if len(name) > MAX_NAME_LENGTH:
            raise ValidationFailed(f"name is longer than {MAX_NAME_LENGTH} characters")
        clean["name"] = name.strip()
    if "done" in fields:
        if not isinstance(fields["done"], bool):
            raise ValidationFailed("done must be true or false")
        clean["done"] = fields["done"]
    if "notes" in fields:
        if not isinstance(fields["notes"], str):
            raise ValidationFailed("notes must be a string")
        clean["notes"] = fields["notes"]
    return clean


class Store:
    """Keeps ${resource} in memory; safe to share between server threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[int, Record] = {}
        self._next_id = 1

    def create(self, fields: Any) -> Record:
        """Adds a ${noun} and returns it with its new id."""
        clean = validate(fields, partial=False)
        with self._lock:
            record = Record(id=self._next_id, **clean)
            self._records[record.id] = record
            self._next_id += 1
        return record

    def get(self, record_id: int) -> Record:
        """Returns the ${noun} with this id, or raises NotFound."""
        with self._lock:
            record = self._records.get(record_id)
        if record is None:
            raise NotFound(f"no ${noun} with id {record_id}")
        return record

    def list_records(self, *, done: bool | None = None) -> list[Record]:
        """Returns the ${resource} in creation order, optionally only (not) done ones."""
        with self._lock:
            records = list(self._records.values())
        return [r for r in records if done is None or r.done is done]

    def update(self, record_id: int, fields: Any) -> Record:
        """Changes some fields of a ${noun} and returns the new version."""
        clean = validate(fields, partial=True)
        with self._lock:
            record = self._records.get(record_id)
            if record is None:
                raise NotFound(f"no ${noun} with id {record_id}")
            record = replace(record, **clean)
            self._records[record_id] = record
        return record

    def delete(self, record_id: int) -> None:
        """Removes a ${noun}, or raises NotFound."""
        with self._lock:
            if self._records.pop(record_id, None) is None:
                raise NotFound(f"no ${noun} with id {record_id}")

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
'''

_SERVER = '''"""JSON over HTTP for the ${noun} store, on the standard library's http.server.

Routes: GET /health; GET and POST /${resource}; GET, PUT, PATCH and DELETE
/${resource}/<id>. Errors are JSON objects with an "error" message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app import RESOURCE
from app.store import NotFound, Store, ValidationFailed

MAX_BODY_BYTES = 64 * 1024


class ApiHandler(BaseHTTPRequestHandler):
    """Serves the store set on the class by make_server."""

    store: Store
    server_version = "${resource}-service/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Keeps request logs off stderr; tests and CI stay quiet."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts == ["health"] and method == "GET":
                self._send(HTTPStatus.OK, {"status": "ok", "count": len(self.store)})
            elif parts == [RESOURCE]:
                self._collection(method, parse_qs(url.query))
            elif len(parts) == 2 and parts[0] == RESOURCE:
                self._member(method, _parse_id(parts[1]))
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"})
        except ValidationFailed as err:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except NotFound as err:
            self._send(HTTPStatus.NOT_FOUND, {"error": str(err)})

    def _collection(self, method: str, query: dict[str, list[str]]) -> None:
        if method == "GET":
            done = query.get("done", [""])[0].lower()
            flag = {"true": True, "false": False}.get(done)
            records = self.store.list_records(done=flag)
            self._send(HTTPStatus.OK, {RESOURCE: [r.to_dict() for r in records]})
        elif method == "POST":
            record = self.store.create(self._read_json())
            self._send(HTTPStatus.CREATED, record.to_dict())
        else:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} not allowed"})

    def _member(self, method: str, record_id: int) -> None:
        if method == "GET":
            self._send(HTTPStatus.OK, self.store.get(record_id).to_dict())
        elif method in ("PUT", "PATCH"):
            record = self.store.update(record_id, self._read_json())
            self._send(HTTPStatus.OK, record.to_dict())
        elif method == "DELETE":
            self.store.delete(record_id)
            self._send(HTTPStatus.NO_CONTENT, None)
        else:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} not allowed"})

    def _read_json(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ValidationFailed("Content-Length is not a number") from None
        if length <= 0 or length > MAX_BODY_BYTES:
            raise ValidationFailed(f"the body must be 1 to {MAX_BODY_BYTES} bytes of JSON")
        try:
            return json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValidationFailed("the body is not valid JSON") from None

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        body = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _parse_id(raw: str) -> int:
    if not raw.isdigit():
        raise NotFound(f"no ${noun} with id {raw!r}")
    return int(raw)


def make_server(
    host: str = "127.0.0.1", port: int = 0, store: Store | None = None
) -> ThreadingHTTPServer:
    """Returns a bound server (port 0 picks a free port); call serve_forever on it."""
    handler = type("BoundApiHandler", (ApiHandler,), {"store": store or Store()})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    """Serves the API until interrupted."""
    parser = argparse.ArgumentParser(description="Serve the ${resource} API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    print(f"serving /${resource} on http://{args.host}:{server.server_address[1]}")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.server_close()
    return 0
'''

MAIN_TEMPLATE = '''"""Runs ${what}: python -m ${package}."""

from ${package}.${module} import main

raise SystemExit(main())
'''


def py_string(text: str) -> str:
    """Returns a double-quoted Python literal of printable text (ruff-format style)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fill(template: str, ctx: Context, **extra: str) -> str:
    """Substitutes the resource, noun, title (as a Python literal) and extra values."""
    values = {"resource": ctx.resource, "noun": ctx.noun, "title": py_string(ctx.title), **extra}
    return Template(template).substitute(values)


def backend_files(ctx: Context) -> dict[str, str]:
    """Returns the backend package `app/` (tests are in offline_tests)."""
    doc = f"The {ctx.resource} service: an in-memory store served as JSON over HTTP."
    return {
        "app/__init__.py": fill(PACKAGE_INIT_TEMPLATE, ctx, doc=doc),
        "app/__main__.py": fill(
            MAIN_TEMPLATE, ctx, what="the API server", package="app", module="server"
        ),
        "app/store.py": fill(_STORE, ctx),
        "app/server.py": fill(_SERVER, ctx),
    }


def has_markers(ctx: Context, markers: dict[str, str]) -> bool:
    """True when the dependency files contain this offline-template interface."""
    for path, mark in markers.items():
        file = ctx.file(path)
        if file is None or mark not in file.content:
            return False
    return True


def _toml_string(text: str) -> str:
    # JSON string syntax is TOML basic-string syntax once non-ASCII stays unescaped
    # (TOML rejects the surrogate escapes json.dumps would write for it).
    return json.dumps(text, ensure_ascii=False)


# The project's root: pytest stops looking for configuration here (it never climbs into
# an enclosing project) and collects only tests/ below it.
PYTEST_SECTION = [
    "[tool.pytest.ini_options]",
    'testpaths = ["tests"]',
    'pythonpath = ["."]',
]


def project_file(ctx: Context) -> str:
    """The project's pyproject.toml, written with the backend at the root of the tree.

    It makes the tree a self-contained project: `python -m pytest` run in it uses this
    configuration and collects tests/ only. Packages are found (tests and docs are not
    packages), so the frontend written in parallel is included without being named.
    """
    lines = [
        "[build-system]",
        'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{ctx.resource}-service"',
        'version = "0.1.0"',
        f"description = {_toml_string(ctx.title)}",
        'requires-python = ">=3.11"',
        "dependencies = []",
        "",
        "[project.optional-dependencies]",
        'test = ["pytest>=8"]',
        "",
        "[project.scripts]",
        f'{ctx.resource}-server = "app.server:main"',
        "",
        "[tool.setuptools.packages.find]",
        'exclude = ["tests*", "docs*"]',
        "",
        *PYTEST_SECTION,
    ]
    return "\n".join(lines) + "\n"


def devops_files(ctx: Context, packages: tuple[str, ...]) -> dict[str, str]:
    """Returns pyproject.toml, Dockerfile and .ci/run for the given packages.

    The pyproject (used when no step wrote the project's own) configures pytest like
    project_file; packages are listed explicitly so setuptools never guesses.
    """
    name = f"{ctx.resource}-service"
    scripts = []
    if "app" in packages:
        scripts.append(f'{ctx.resource}-server = "app.server:main"')
    if "frontend" in packages:
        scripts.append(f'{ctx.resource}-cli = "frontend.cli:main"')
    pyproject = [
        "[build-system]",
        'requires = ["setuptools>=68"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{name}"',
        'version = "0.1.0"',
        f"description = {_toml_string(ctx.title)}",
        'requires-python = ">=3.11"',
        "dependencies = []",
        "",
        "[project.optional-dependencies]",
        'test = ["pytest>=8"]',
        "",
    ]
    if scripts:
        pyproject += ["[project.scripts]", *scripts, ""]
    pyproject += [
        "[tool.setuptools]",
        f"packages = {json.dumps(list(packages))}",
        "",
        *PYTEST_SECTION,
    ]
    copies = [f"COPY {p}/ {p}/" for p in packages]
    if "app" in packages:
        run = [
            "EXPOSE 8000",
            'HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; '
            "urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)\"",
            'CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]',
        ]
    else:
        run = [f'CMD ["python", "-m", "{packages[0] if packages else "app"}", "--help"]']
    dockerfile = [
        "# Runtime image: standard library only, so nothing to pip install.",
        "FROM python:3.11-slim",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
        "WORKDIR /srv",
        "RUN useradd --create-home --uid 10001 service",
        "COPY pyproject.toml ./",
        *copies,
        "USER service",
        *run,
    ]
    checked = " ".join([*packages, "tests"])
    ci = [
        "#!/usr/bin/env bash",
        "# The CI entry point; run it locally the same way: bash .ci/run",
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        f"python -m compileall -q {checked}",
        "python -m pytest -q",
    ]
    return {
        "pyproject.toml": "\n".join(pyproject) + "\n",
        "Dockerfile": "\n".join(dockerfile) + "\n",
        ".ci/run": "\n".join(ci) + "\n",
    }
