"""
The daemon's settings: their table, the TOML config file, and how the
command line and the file combine (sans-IO: no reactor, no sockets).

Every setting has one name, used both as the long option (C{--max-upgrade-body})
and as the key in the config file (C{max-upgrade-body = 1024}; C{_} may stand
for C{-}). A value given on the command line wins over the file's; a list
given on the command line replaces the file's list (and C{--enable X} also
takes C{X} out of the file's C{disable} list).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "SETTINGS",
    "ConfigError",
    "Setting",
    "merge",
    "parseMount",
    "readConfig",
    "selectProtocols",
]

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"


class ConfigError(Exception):
    """A setting that cannot be used; C{str()} is one line naming the problem."""


def _positive(kind: Callable[[Any], Any], least: int = 0) -> Callable[[Any], Any]:
    """A number of C{kind}, C{least} or more (by default: not negative)."""

    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        number = kind(value)
        if number < least:
            raise ValueError("must not be negative" if least == 0 else f"must be at least {least}")
        return number

    convert.__name__ = f"non-negative {kind.__name__}" if least == 0 else f"positive {kind.__name__}"
    return convert


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    convert.__name__ = " or ".join(choices)
    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


_text.__name__ = "string"


def _idleTimeout(value: Any) -> str:
    from txupgrade.daemon.limits import parseIdleTimeout

    parseIdleTimeout(_text(value))
    return str(value)


_idleTimeout.__name__ = "PROTOCOL=SECONDS"


@dataclass(frozen=True)
class Setting:
    """
    One daemon setting.

    @ivar kind: C{"value"} (one value), C{"list"} (repeatable option, TOML
        array) or C{"flag"} (an option without argument, TOML boolean).
    @ivar convert: Checks and converts a value (from the command line's text
        or the file's TOML value); raises L{ValueError} with a short reason.
    """

    name: str
    kind: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        "list",
        _text,
        [DEFAULT_LISTEN],
        "Listen on this Twisted server endpoint: tcp:PORT, ssl:PORT, unix:PATH, "
        "systemd:domain=INET:index=N, haproxy:tcp:PORT (PROXY protocol); repeatable",
        "ENDPOINT",
    ),
    Setting(
        "resource",
        "value",
        _text,
        None,
        "The site root: a twisted.web resource, or a callable returning one, "
        "by dotted name (default: the demo)",
        "DOTTED.NAME",
    ),
    Setting(
        "websocket",
        "list",
        _text,
        [],
        "Mount an autobahn WebSocketServerFactory (or a callable returning one) at PATH; repeatable",
        "PATH=DOTTED.NAME",
    ),
    Setting(
        "websocket-origin",
        "list",
        _text,
        [],
        "Allow WebSocket handshakes from pages of this origin (wildcards: https://*.example.com:*); "
        "repeatable; default: same origin only",
        "PATTERN",
    ),
    Setting(
        "allowed-host",
        "list",
        _text,
        [],
        "Answer requests whose Host names this host (*.example.com for subdomains, * for any); "
        "others get 400, the defence against DNS rebinding; repeatable; "
        "default: localhost, 127.0.0.1 and ::1 on a loopback listener, any host elsewhere",
        "NAME",
    ),
    Setting(
        "enable",
        "list",
        _text,
        [],
        "Offer only these upgrade protocols (repeatable; see --list-protocols)",
        "PROTOCOL",
    ),
    Setting(
        "disable",
        "list",
        _text,
        [],
        "Do not offer this upgrade protocol (repeatable; see --list-protocols)",
        "PROTOCOL",
    ),
    Setting(
        "tls-certificate",
        "value",
        _text,
        None,
        "PEM file with the private key and certificate chain, for ssl: listeners",
        "PEM",
    ),
    Setting("timeout", "value", _positive(float), 60.0, "HTTP idle timeout in seconds", "SECONDS"),
    Setting(
        "max-upgrade-body",
        "value",
        _positive(int),
        1 << 20,
        "Largest body an upgrade request may carry, in bytes (413 beyond)",
        "BYTES",
    ),
    Setting(
        "max-upgrade-offers",
        "value",
        _positive(int),
        16,
        "Most protocols one Upgrade field may list, 64 bytes each (400 beyond)",
        "N",
    ),
    Setting(
        "websocket-max-message",
        "value",
        _positive(int, least=1),
        4 << 20,
        "Largest WebSocket message of the demo's /ws (after permessage-deflate), in bytes: "
        "autobahn holds a whole message, so this bounds each connection's memory (1009 beyond)",
        "BYTES",
    ),
    Setting(
        "websocket-max-frame",
        "value",
        _positive(int, least=1),
        1 << 20,
        "Largest WebSocket frame payload of the demo's /ws, in bytes; at most "
        "--websocket-max-message (1009 beyond)",
        "BYTES",
    ),
    Setting(
        "policy", "value", _choice("client", "server"), "client", "Whose preference picks the protocol", ""
    ),
    Setting("access-log", "value", _text, None, "Write a combined access log to this file", "PATH"),
    Setting("no-access-log", "flag", bool, False, "Log no access lines at all (switches included)"),
    Setting(
        "workers",
        "value",
        _positive(int),
        0,
        "Serve with N worker processes sharing the listening sockets (0: serve in this process)",
        "N",
    ),
    Setting("no-advertise", "flag", bool, False, "Do not list available protocols in Upgrade on answers"),
    Setting(
        "no-prior-knowledge",
        "flag",
        bool,
        False,
        "Do not serve HTTP/2 to cleartext connections that start with its preface (see docs/h2c.md)",
    ),
    Setting(
        "no-alpn-h2",
        "flag",
        bool,
        False,
        "Do not offer HTTP/2 to TLS clients by ALPN h2: they get HTTP/1.1",
    ),
    Setting(
        "no-extended-connect",
        "flag",
        bool,
        False,
        "Do not offer RFC 8441 extended CONNECT on HTTP/2 (by default CONNECT with :protocol NAME "
        "reaches the upgrade protocol NAME, WebSocket included, on that stream; see docs/h2c.md)",
    ),
    Setting("log-format", "value", _choice("text", "json"), "text", "Log as text lines or JSON", ""),
    Setting(
        "max-connections",
        "value",
        _positive(int),
        0,
        "Most open connections of the process; one more is answered 503 (0: no limit)",
        "COUNT",
    ),
    Setting(
        "max-connections-per-client",
        "value",
        _positive(int),
        0,
        "Most open connections from one client address; one more is answered 503 (0: no limit)",
        "COUNT",
    ),
    Setting(
        "request-head-timeout",
        "value",
        _positive(float),
        30.0,
        "Seconds a client has to send a request's head, against slowloris; then 408 (0: off)",
        "SECONDS",
    ),
    Setting(
        "idle-timeout",
        "list",
        _idleTimeout,
        [],
        "Close an upgraded connection of PROTOCOL silent for SECONDS (repeatable)",
        "PROTOCOL=SECONDS",
    ),
    Setting(
        "metrics",
        "value",
        _text,
        None,
        "Serve Prometheus metrics at /metrics on this endpoint (keep it private; needs the metrics extra)",
        "ENDPOINT",
    ),
    Setting(
        "drain-timeout",
        "value",
        _positive(float),
        10.0,
        "On SIGTERM/SIGINT, seconds to let connections finish before aborting them",
        "SECONDS",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _convert(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.convert(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: bad {setting.name} {value!r}: {error}") from None


def readConfig(path: str, settings: Sequence[Setting] = SETTINGS) -> dict[str, Any]:
    """
    Read the TOML config file at C{path}: the settings it gives, converted.

    @raise ConfigError: the file cannot be read or parsed, names an unknown
        setting or gives a value of the wrong type.
    """
    known = {s.name: s for s in settings}
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        name = key.replace("_", "-")
        setting = known.get(name)
        if setting is None:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        where = f"{path}: {key}"
        if setting.kind == "list":
            if name == "websocket" and isinstance(value, dict):
                value = [f"{p}={n}" for p, n in value.items()]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected a list of strings, not {value!r}")
            values[name] = [_convert(setting, item, where) for item in value]
        elif setting.kind == "flag":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: expected true or false, not {value!r}")
            values[name] = value
        else:
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{where}: expected one value, not {value!r}")
            values[name] = _convert(setting, value, where)
    return values


def merge(
    fromFile: Mapping[str, Any], fromCommandLine: Mapping[str, Any], settings: Sequence[Setting] = SETTINGS
) -> dict[str, Any]:
    """
    Every setting's value: the command line's when given (not L{None}, not an
    empty list, a flag set), else the file's, else the default.

    A command-line C{enable} also takes its names out of the file's C{disable}.
    """
    result: dict[str, Any] = {}
    for setting in settings:
        name = setting.name
        given = fromCommandLine.get(name)
        if setting.kind == "flag":
            result[name] = bool(given) or bool(fromFile.get(name, setting.default))
        elif given is not None and given != []:
            result[name] = _convert(setting, given, "command line") if setting.kind == "value" else given
        elif name in fromFile:
            result[name] = fromFile[name]
        else:
            default = setting.default
            result[name] = list(default) if isinstance(default, list) else default
    enabled = {_base(n) for n in fromCommandLine.get("enable") or ()}
    if enabled and not fromCommandLine.get("disable") and "disable" in result:
        result["disable"] = [n for n in result["disable"] if _base(n) not in enabled]
    return result


def parseMount(text: str) -> tuple[str, str]:
    """
    C{"/chat=pkg.mod.factory"} as C{("/chat", "pkg.mod.factory")}.

    @raise ConfigError: no C{=}, a path not starting with C{/}, or an empty name.
    """
    path, equals, name = text.partition("=")
    path, name = path.strip(), name.strip()
    if not equals or not path.startswith("/") or not name or path == "/":
        raise ConfigError(f"--websocket wants PATH=DOTTED.NAME with PATH like /chat, not {text!r}")
    return path, name


def _base(name: str) -> str:
    return name.split("/", 1)[0].lower()


def selectProtocols(available: Iterable[str], enable: Sequence[str], disable: Sequence[str]) -> list[str]:
    """
    Which of the C{available} protocol names are offered, in their order.

    Names match case-insensitively, with or without a C{/version}. With no
    C{enable}, everything not disabled is offered; with some, only those.

    @raise ConfigError: a name that is not available.
    """
    names = list(available)

    def resolve(option: str, wanted: str) -> set[str]:
        lowered = wanted.lower()
        found = {n for n in names if n.lower() == lowered or ("/" not in lowered and _base(n) == lowered)}
        if not found:
            raise ConfigError(
                f"--{option}: unknown protocol {wanted!r} (available: {', '.join(names) or 'none'})"
            )
        return found

    offered = set(names)
    if enable:
        offered = set().union(*(resolve("enable", w) for w in enable))
    for wanted in disable:
        offered -= resolve("disable", wanted)
    return [n for n in names if n in offered]
