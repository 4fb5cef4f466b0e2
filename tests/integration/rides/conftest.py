from tests.support.trust import world

__all__ = ["world"]
