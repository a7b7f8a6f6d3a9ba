"""
The built-in upgrade protocols, as plugins. Imports nothing heavy: C{h2c}
imports the h2 library only when a connection upgrades.
"""

from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.protocols.h2c import H2cUpgrade

echo = EchoUpgrade()
h2c = H2cUpgrade()
