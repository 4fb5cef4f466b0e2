"""Nothing on a request's path runs in Litestar's thread pool: a sync hook, handler or dependency
costs every request a hop through a thread and back (its submit, the wake-ups, the GIL passed to
and fro), which showed as a fifth of a server's CPU under a flash crowd of joins."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler
from litestar.utils.predicates import is_async_callable

from app.main import create_app
from app.settings import load_settings


def _handlers() -> list[HTTPRouteHandler]:
    app = create_app(load_settings({}))
    return [
        handler
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if isinstance(handler, HTTPRouteHandler)
    ]


def test_no_request_hook_runs_in_a_thread() -> None:
    handlers = _handlers()
    assert handlers
    for handler in handlers:
        hooks: list[object] = [handler.resolve_before_request(), handler.resolve_after_response()]
        hooks += [layer.after_request for layer in handler.ownership_layers]
        hooks += handler.resolve_guards()
        for hook in hooks:
            if hook is None:
                continue
            # A plain function is wrapped in AsyncCallable (a thread per call), or kept as it is
            # and called in a thread anyway (a controller's after_request): either way not async.
            where = getattr(hook, "func", hook)
            assert is_async_callable(hook), f"{handler}: {where} runs in a thread"
    assert any(handler.resolve_before_request() for handler in handlers)


def test_no_handler_or_dependency_runs_in_a_thread() -> None:
    for handler in _handlers():
        assert not (handler.has_sync_callable and handler.sync_to_thread), handler
        for name, provide in handler.resolve_dependencies().items():
            assert not provide.sync_to_thread, f"{handler}: dependency {name} runs in a thread"


def test_no_dependency_takes_the_state() -> None:
    # Litestar gives a dependency that asks for `state` a new State, a copy of the app's, built
    # on every request: the dependencies read the app's state through the request instead.
    for handler in _handlers():
        for name, provide in handler.resolve_dependencies().items():
            parameters = provide.signature_model.__struct_fields__
            assert "state" not in parameters, f"{handler}: dependency {name} takes the state"
