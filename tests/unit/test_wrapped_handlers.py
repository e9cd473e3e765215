"""A server interceptor's wrappers are made once per method, and again when the handler
they wrap changes."""

from __future__ import annotations

from typing import Any

from maestro.core.wrapped_handlers import WrappedHandlers


def _counting() -> tuple[WrappedHandlers, list[tuple[str, Any]]]:
    made: list[tuple[str, Any]] = []

    def wrap(method: str, handler: Any) -> Any:
        made.append((method, handler))
        return ("wrapped", method, handler)

    return WrappedHandlers(wrap), made


def test_a_method_is_wrapped_once_and_each_method_apart() -> None:
    handlers, made = _counting()
    first, second = object(), object()
    assert handlers.get("/p.S/A", first) == ("wrapped", "/p.S/A", first)
    assert handlers.get("/p.S/A", first) is handlers.get("/p.S/A", first)
    assert handlers.get("/p.S/B", second) == ("wrapped", "/p.S/B", second)
    assert made == [("/p.S/A", first), ("/p.S/B", second)]


def test_a_method_whose_handler_changed_is_wrapped_again() -> None:
    handlers, made = _counting()
    old, new = object(), object()
    handlers.get("/p.S/A", old)
    assert handlers.get("/p.S/A", new) == ("wrapped", "/p.S/A", new)
    assert handlers.get("/p.S/A", new) == ("wrapped", "/p.S/A", new)
    assert made == [("/p.S/A", old), ("/p.S/A", new)]
