"""A serving process hides what it imported from the garbage collector (`gc.freeze`): a full
collection no longer walks the app's modules, classes and tables, a pause of about 100 ms that
every request of the worker waited out."""

from __future__ import annotations

import gc

from app.serving import freeze_startup_objects


def test_the_apps_startup_objects_are_out_of_the_collectors_sight() -> None:
    try:
        frozen = freeze_startup_objects()
        import app.main

        assert frozen == gc.get_freeze_count() > 50_000
        tracked = {id(thing) for thing in gc.get_objects()}
        assert id(app.main.create_app) not in tracked
        assert id(app.main.__dict__) not in tracked
        later: list[object] = [object()]  # made after: collected as ever
        assert id(later) in {id(thing) for thing in gc.get_objects()}
    finally:
        gc.unfreeze()
