from tests.integration.rides.conftest import own_world
from tests.support.trust import world

__all__ = ["own_world", "world"]
