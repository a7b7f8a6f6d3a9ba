"""
The C{twistd txupgrade} dropin; the work is in L{txupgrade.tap}.
"""

from twisted.application.service import ServiceMaker

txupgrade = ServiceMaker(
    "txupgrade",
    "txupgrade.tap",
    "An HTTP/1.1 server that switches connections to other protocols via Upgrade.",
    "txupgrade",
)
