"""
txupgrade: switch Twisted HTTP/1.1 connections to other protocols via Upgrade.

The public names, from the core (the modules of this package) and the raw-stream
handoff of L{txupgrade.protocols}; the layout is in docs/internals.md.
"""

from txupgrade import _moved
from txupgrade.channel import UpgradeAwareRequest, UpgradeChannel, UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol, IUpgradeResource
from txupgrade.negotiation import Accept, Decline, Refuse, UpgradeError, UpgradeRequest
from txupgrade.protocols.stream import StreamUpgrade
from txupgrade.registry import ProtocolRegistry
from txupgrade.resource import BytesResource, DirectoryResource, UpgradeRequiredResource

_moved.install()

__all__ = [
    "Accept",
    "BytesResource",
    "Decline",
    "DirectoryResource",
    "IUpgradeProtocol",
    "IUpgradeResource",
    "ProtocolRegistry",
    "Refuse",
    "StreamUpgrade",
    "UpgradeAwareRequest",
    "UpgradeChannel",
    "UpgradeError",
    "UpgradeRequest",
    "UpgradeRequiredResource",
    "UpgradeSite",
]
