"""Test files the offline provider writes: backend, frontend and acceptance tests.

Each test module runs with nothing but Python and pytest from the output root. Tests
that need a server bind 127.0.0.1 port 0 and shut it down; none of them sleep.
"""

from __future__ import annotations

from string import Template

from persona_service.offline_context import Context

_SERVER_FIXTURE = '''

@pytest.fixture
def base_url() -> Iterator[str]:
    """Serves ${served} on a free local port for one test."""
    server = ${make_server}
    # shutdown() returns only once serve_forever next polls its flag: a short interval
    # keeps each test's teardown to a few milliseconds instead of up to the interval.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.005})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
'''

_HTTP_HELPER = '''

def call(method: str, url: str, payload: Any = None) -> tuple[int, Any]:
    """Sends one JSON request; returns the status and the decoded body (or None)."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        with err:
            status, body = err.code, err.read()
    return status, json.loads(body) if body else None
'''

_BACKEND = (
    '''"""Tests of the ${resource} service: the store, and the API over real HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from app import RESOURCE
from app.server import make_server
from app.store import NotFound, Store, ValidationFailed
'''
    + _SERVER_FIXTURE
    + _HTTP_HELPER
    + """

def test_create_assigns_increasing_ids() -> None:
    store = Store()
    first = store.create({"name": "first"})
    second = store.create({"name": "second", "notes": "n"})
    assert (first.id, second.id) == (1, 2)
    assert [r.name for r in store.list_records()] == ["first", "second"]


def test_create_rejects_bad_input() -> None:
    store = Store()
    for bad in ({}, {"name": "  "}, {"name": 3}, {"name": "x", "colour": "red"}, ["x"]):
        with pytest.raises(ValidationFailed):
            store.create(bad)
    assert len(store) == 0


def test_update_and_delete() -> None:
    store = Store()
    record = store.create({"name": "draft"})
    updated = store.update(record.id, {"done": True})
    assert updated.done is True
    assert updated.name == "draft"
    assert store.list_records(done=True) == [updated]
    store.delete(record.id)
    with pytest.raises(NotFound):
        store.get(record.id)
    with pytest.raises(NotFound):
        store.delete(record.id)


def test_http_round_trip(base_url: str) -> None:
    status, created = call("POST", f"{base_url}/{RESOURCE}", {"name": "from http"})
    assert status == 201
    assert created["name"] == "from http"
    item_url = f"{base_url}/{RESOURCE}/{created['id']}"

    status, listed = call("GET", f"{base_url}/{RESOURCE}")
    assert status == 200
    assert listed[RESOURCE] == [created]

    status, changed = call("PATCH", item_url, {"done": True})
    assert (status, changed["done"]) == (200, True)

    assert call("DELETE", item_url) == (204, None)
    status, error = call("GET", item_url)
    assert status == 404
    assert "no" in error["error"]


def test_http_rejects_bad_requests(base_url: str) -> None:
    status, error = call("POST", f"{base_url}/{RESOURCE}", {"name": ""})
    assert status == 400
    assert "name" in error["error"]
    assert call("GET", f"{base_url}/nowhere")[0] == 404
    assert call("GET", f"{base_url}/health")[1]["status"] == "ok"
"""
)

_FRONTEND = (
    '''"""Tests of the ${resource} client against a stub of the documented HTTP contract."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from frontend import RESOURCE
from frontend.cli import main
from frontend.client import ApiClient, ApiError
from frontend.render import render_page


class StubApi(BaseHTTPRequestHandler):
    """Just enough of the /${resource} API for the client: create, list, 404."""

    records: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.path == f"/{RESOURCE}":
            self._send(200, {RESOURCE: self.records})
        else:
            self._send(404, {"error": "no such ${noun}"})

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        record = {"id": len(self.records) + 1, "done": False, **payload}
        self.records.append(record)
        self._send(201, record)

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_stub_server() -> ThreadingHTTPServer:
    """Returns a stub server with its own, empty list of ${resource}."""
    handler = type("FreshStubApi", (StubApi,), {"records": []})
    return ThreadingHTTPServer(("127.0.0.1", 0), handler)
'''
    + _SERVER_FIXTURE
    + """

def test_client_creates_and_lists(base_url: str) -> None:
    client = ApiClient(base_url)
    created = client.create("write tests", notes="first")
    assert created["id"] == 1
    assert client.list_records() == [created]


def test_client_raises_api_error_with_status(base_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        ApiClient(base_url).get(99)
    assert caught.value.status == 404
    assert "no such" in caught.value.message


def test_render_page_escapes_values() -> None:
    page = render_page("<Title>", [{"id": 1, "name": "<script>", "done": True}])
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "1 of 1 done" in page


def test_cli_adds_and_lists(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", base_url, "add", "from the cli"]) == 0
    assert main(["--url", base_url, "list"]) == 0
    out = capsys.readouterr().out
    assert "added 1" in out
    assert "[ ] 1: from the cli" in out
"""
)


_ACCEPTANCE_HEAD = '''"""Acceptance tests, written offline by the QA engineer.

Requirement: ${title_text}

They exercise the code delivered by the steps before through its public interface;
the test plan (docs/test-plan.md) maps them to the requirements.
"""

from __future__ import annotations

${imports}

ROOT = Path(__file__).resolve().parent.parent
MODULES = ${modules}


@pytest.mark.parametrize("module", MODULES)
def test_delivered_module_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("module", MODULES)
def test_delivered_module_compiles(module: str) -> None:
    source = ROOT / (module.replace(".", "/") + ".py")
    if not source.exists():
        source = ROOT / module.replace(".", "/") / "__init__.py"
    py_compile.compile(str(source), doraise=True)
'''

_ACCEPTANCE_BACKEND = """

def test_backend_keeps_records_and_rejects_invalid_input() -> None:
    store = Store()
    record = store.create({"name": "acceptance"})
    assert store.get(record.id) == record
    with pytest.raises(ValidationFailed):
        store.create({"name": ""})
    assert len(store) == 1
"""

_ACCEPTANCE_END_TO_END = (
    _SERVER_FIXTURE
    + """

def test_client_drives_the_backend_end_to_end(base_url: str) -> None:
    client = ApiClient(base_url)
    created = client.create("accepted <b>work</b>")
    assert client.update(created["id"], done=True)["done"] is True
    records = client.list_records()
    assert [r["id"] for r in records] == [created["id"]]
    assert "&lt;b&gt;" in render_page("acceptance", records)
    client.delete(created["id"])
    with pytest.raises(ApiError) as caught:
        client.get(created["id"])
    assert caught.value.status == 404


def test_backend_rejects_invalid_input_over_http(base_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        ApiClient(base_url).create("")
    assert caught.value.status == 400
    assert ApiClient(base_url).list_records() == []
"""
)


def _fill(template: str, ctx: Context, **extra: str) -> str:
    values = {"resource": ctx.resource, "noun": ctx.noun, **extra}
    return Template(template).substitute(values)


def backend_tests(ctx: Context) -> str:
    """Returns tests/test_backend.py for the offline backend."""
    return _fill(_BACKEND, ctx, served="the API", make_server='make_server("127.0.0.1", 0)')


def frontend_tests(ctx: Context) -> str:
    """Returns tests/test_frontend.py for the offline frontend."""
    return _fill(_FRONTEND, ctx, served="a fresh stub API", make_server="make_stub_server()")


def _py_list(names: list[str]) -> str:
    # Formatted as ruff format would: on one line when it fits, else one per line.
    one_line = "[" + ", ".join(f'"{n}"' for n in names) + "]"
    if len("MODULES = ") + len(one_line) <= 100:
        return one_line
    return "[\n" + "".join(f'    "{n}",\n' for n in names) + "]"


def _docstring_text(text: str) -> str:
    # The title comes from the requirement; keep it from closing or escaping the docstring.
    return text.replace("\\", "/").replace('"', "'")


def acceptance_tests(ctx: Context, modules: list[str], *, backend: bool, frontend: bool) -> str:
    """Returns tests/test_acceptance.py for the delivered code.

    Args:
        ctx: The step's context.
        modules: Dotted names of the delivered modules; each must import and compile.
        backend: The offline backend interface is present (test it directly).
        frontend: The offline frontend interface is present too (test end to end).
    """
    end_to_end = backend and frontend
    stdlib = ["import importlib", "import py_compile"]
    if end_to_end:
        stdlib += ["import threading", "from collections.abc import Iterator"]
    stdlib.append("from pathlib import Path")
    local: list[str] = []
    if end_to_end:
        local.append("from app.server import make_server")
    if backend:
        local.append("from app.store import Store, ValidationFailed")
    if end_to_end:
        local += [
            "from frontend.client import ApiClient, ApiError",
            "from frontend.render import render_page",
        ]
    groups = [stdlib, ["import pytest"]] + ([local] if local else [])
    text = _fill(
        _ACCEPTANCE_HEAD,
        ctx,
        imports="\n\n".join("\n".join(group) for group in groups),
        title_text=_docstring_text(ctx.title),
        modules=_py_list(modules),
    )
    if backend:
        text += _ACCEPTANCE_BACKEND
    if end_to_end:
        text += Template(_ACCEPTANCE_END_TO_END).substitute(
            served="the delivered backend", make_server='make_server("127.0.0.1", 0)'
        )
    return text
