"""The Allow header of an OPTIONS answer names every method of its path, parameters included,
and HEAD wherever GET is (app.main.head_as_get over Litestar's own answer)."""

from __future__ import annotations

from litestar import Controller, Litestar, delete, get
from litestar.params import FromPath
from litestar.testing import TestClient

from app.main import head_as_get, methods_by_template


class Things(Controller):
    path = "/things"

    @get("/{thing_id:int}")
    async def read(self, thing_id: FromPath[int]) -> int:
        return thing_id

    @delete("/{thing_id:int}")
    async def remove(self, thing_id: FromPath[int]) -> None:
        return None


def test_options_names_every_method_of_a_path_with_a_parameter() -> None:
    app = Litestar([Things])
    app.asgi_handler = head_as_get(app.asgi_handler, methods_by_template(app))
    with TestClient(app) as client:
        options = client.options("/things/7")
        refused = client.put("/things/7")
    assert (options.status_code, options.headers["allow"]) == (204, "DELETE, GET, HEAD, OPTIONS")
    assert (refused.status_code, refused.headers["allow"]) == (405, "DELETE, GET, HEAD, OPTIONS")
