"""
txupgrade: switch Twisted HTTP/1.1 connections to other protocols via Upgrade.
"""

from txupgrade.channel import UpgradeAwareRequest, UpgradeChannel, UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol, IUpgradeResource
from txupgrade.negotiation import Accept, Decline, Refuse, UpgradeError, UpgradeRequest
from txupgrade.registry import ProtocolRegistry
from txupgrade.resource import DirectoryResource, UpgradeRequiredResource
from txupgrade.stream import StreamUpgrade

__all__ = [
    "Accept",
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
