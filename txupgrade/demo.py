"""
The resource tree C{twistd txupgrade} serves by default.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.static import Data

from txupgrade.echo import EchoResource
from txupgrade.registry import ProtocolRegistry

__all__ = ["demoRoot"]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>txupgrade</title></head>
<body>
<h1>txupgrade</h1>
<p>One HTTP/1.1 port; any connection can switch protocols with
<code>Upgrade</code>. Protocols offered on every path: <b>{names}</b>.</p>
<ul>
<li><code>GET /echo</code> and <code>POST /echo</code>: plain HTTP.</li>
<li><code>curl -i -H 'Connection: Upgrade' -H 'Upgrade: echo' http://HOST/</code>:
a 101, then every byte comes back.</li>
</ul>
</body></html>
"""


def demoRoot(protocols: ProtocolRegistry) -> Resource:
    """A root with a page at C{/} and L{EchoResource} at C{/echo}."""
    names = ", ".join(protocols.names()) or "(none)"
    root = Resource()
    page = Data(_PAGE.format(names=names).encode("utf-8"), "text/html; charset=utf-8")
    root.putChild(b"", page)
    root.putChild(b"echo", EchoResource())
    return root
