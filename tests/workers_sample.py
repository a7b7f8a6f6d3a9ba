"""
A site for the C{--workers} tests, loaded by dotted name (C{--resource}):
C{/pid} answers the process id of the worker that served it.
"""

from __future__ import annotations

import os

from twisted.web.resource import Resource


class _Pid(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return str(os.getpid()).encode("ascii")


def root() -> Resource:
    """A root with C{/pid}."""
    site = Resource()
    site.putChild(b"pid", _Pid())
    return site
