"""
What C{twistd txupgrade} runs: its settings (L{config}), the service and its
listeners (L{service}), connection tracking and drain (L{tracking}), limits
(L{limits}), logs (L{logs}), metrics (L{metrics}), worker processes
(L{workers}, L{workerplan}) and the embedded demo site (L{demo}).

Layering (checked in CI): the daemon may import the core and the protocols;
nothing imports the daemon but the tap (L{txupgrade.tap}). Importing this
package imports none of its modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = frozenset(
    {"config", "demo", "limits", "logs", "metrics", "service", "tracking", "workerplan", "workers"}
)


def __getattr__(name: str) -> Any:
    """
    The names of the old C{txupgrade.daemon} module (now L{service}), such
    as C{DaemonService}, for code written before the layout.
    """
    if name in _SUBMODULES or name.startswith("__"):
        raise AttributeError(name)
    service = importlib.import_module("txupgrade.daemon.service")
    try:
        return getattr(service, name)
    except AttributeError:
        raise AttributeError(f"module 'txupgrade.daemon' has no attribute {name!r}") from None
