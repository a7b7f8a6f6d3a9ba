"""
The built-in upgrade protocols, as plugins. Imports nothing heavy.
"""

from txupgrade.echo import EchoUpgrade

echo = EchoUpgrade()
