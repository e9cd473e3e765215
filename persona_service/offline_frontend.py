"""Source files the offline provider writes for the frontend developer.

An HTTP client of the backend's documented contract, an HTML renderer and a CLI, in
the standard library only. They share only the HTTP contract with the backend.
"""

from __future__ import annotations

from persona_service.offline_context import Context
from persona_service.offline_templates import MAIN_TEMPLATE, PACKAGE_INIT_TEMPLATE, fill

_CLIENT = '''"""A small HTTP client for the /${resource} API (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from frontend import RESOURCE


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class ApiClient:
    """Calls the ${resource} API at base_url, e.g. http://127.0.0.1:8000."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def list_records(self) -> list[dict[str, Any]]:
        """Returns every ${noun}."""
        records: list[dict[str, Any]] = self._call("GET", f"/{RESOURCE}")[RESOURCE]
        return records

    def create(self, name: str, notes: str = "") -> dict[str, Any]:
        """Adds a ${noun} and returns it."""
        return self._call("POST", f"/{RESOURCE}", {"name": name, "notes": notes})

    def get(self, record_id: int) -> dict[str, Any]:
        """Returns one ${noun}."""
        return self._call("GET", f"/{RESOURCE}/{record_id}")

    def update(self, record_id: int, **fields: Any) -> dict[str, Any]:
        """Changes fields (name, done, notes) of a ${noun} and returns it."""
        return self._call("PATCH", f"/{RESOURCE}/{record_id}", fields)

    def delete(self, record_id: int) -> None:
        """Removes a ${noun}."""
        self._call("DELETE", f"/{RESOURCE}/{record_id}")

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            with err:
                raise ApiError(err.code, _error_message(err.read())) from None
        return json.loads(body) if body else None


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace") or "no details"
'''

_RENDER = '''"""Renders ${resource} as HTML; every value is escaped."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any


def render_table(records: Iterable[dict[str, Any]]) -> str:
    """Returns an HTML table of ${resource}."""
    rows = []
    for record in records:
        cells = [
            str(int(record["id"])),
            escape(str(record["name"])),
            "yes" if record.get("done") else "no",
            escape(str(record.get("notes", ""))),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "<tr><th>id</th><th>name</th><th>done</th><th>notes</th></tr>"
    return "<table>\\n" + "\\n".join([head, *rows]) + "\\n</table>"


def render_page(title: str, records: list[dict[str, Any]]) -> str:
    """Returns a complete HTML page listing the ${resource}."""
    done = sum(1 for r in records if r.get("done"))
    return (
        '<!doctype html>\\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\\n<body>\\n<h1>{escape(title)}</h1>\\n"
        f"<p>{done} of {len(records)} done</p>\\n{render_table(records)}\\n</body></html>\\n"
    )
'''

_CLI = '''"""Command line for the ${resource} API: python -m frontend --url URL COMMAND."""

from __future__ import annotations

import argparse

from frontend import TITLE
from frontend.client import ApiClient, ApiError
from frontend.render import render_page


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit code (1 when the API refuses)."""
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list ${resource}")
    add = commands.add_parser("add", help="add a ${noun}")
    add.add_argument("name")
    done = commands.add_parser("done", help="mark a ${noun} done")
    done.add_argument("id", type=int)
    remove = commands.add_parser("remove", help="remove a ${noun}")
    remove.add_argument("id", type=int)
    commands.add_parser("html", help="print an HTML page of ${resource}")
    args = parser.parse_args(argv)

    client = ApiClient(args.url)
    try:
        if args.command == "list":
            for record in client.list_records():
                mark = "x" if record["done"] else " "
                print(f"[{mark}] {record['id']}: {record['name']}")
        elif args.command == "add":
            print(f"added {client.create(args.name)['id']}")
        elif args.command == "done":
            client.update(args.id, done=True)
            print(f"done {args.id}")
        elif args.command == "remove":
            client.delete(args.id)
            print(f"removed {args.id}")
        else:
            print(render_page(TITLE, client.list_records()), end="")
    except ApiError as err:
        print(f"error: {err}")
        return 1
    return 0
'''


def frontend_files(ctx: Context) -> dict[str, str]:
    """Returns the client package `frontend/` (tests are in offline_tests)."""
    doc = f"The {ctx.resource} client: an HTTP client, an HTML renderer and a CLI."
    return {
        "frontend/__init__.py": fill(PACKAGE_INIT_TEMPLATE, ctx, doc=doc),
        "frontend/__main__.py": fill(
            MAIN_TEMPLATE, ctx, what="the command line", package="frontend", module="cli"
        ),
        "frontend/client.py": fill(_CLIENT, ctx),
        "frontend/render.py": fill(_RENDER, ctx),
        "frontend/cli.py": fill(_CLI, ctx),
    }
