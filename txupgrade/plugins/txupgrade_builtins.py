"""
The built-in upgrade protocols, as plugins. Imports nothing heavy: C{h2c}
imports the h2 library only when a connection upgrades.
"""

from txupgrade.echo import EchoUpgrade
from txupgrade.h2c import H2cUpgrade

echo = EchoUpgrade()
h2c = H2cUpgrade()
