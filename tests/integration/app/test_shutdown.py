"""`copool serve` on a bare machine starts its own Redis and stops in order on Ctrl+C."""

from __future__ import annotations

from pathlib import Path

from tests.integration.accounts.serving import free_port, serving


def test_ctrl_c_stops_the_embedded_setup_in_order_without_a_traceback(tmp_path: Path) -> None:
    # No COPOOL_REDIS_URL, and no Redis where copool looks for one: it starts its own.
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with serving(tmp_path, {"_COPOOL_LOCAL_REDIS_URL": nowhere}) as server:
        returncode, output = server.interrupt()
    assert "started an embedded redis-server" in output
    assert "Traceback" not in output, output
    assert "Application shutdown complete" in output
    assert "embedded redis-server stopped" in output
    assert returncode == 0, output
