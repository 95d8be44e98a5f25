"""The ``[web]`` section of client.toml and the ``WebSettings`` it becomes.

::

    [web]
    enabled = true            # serve the web app from the client daemon
    host = "127.0.0.1"        # loopback only, unless accept_network_risk = true (see below)
    port = 0                  # 0: the OS picks a free port; `cloudp2p web` prints the link
    view_seconds = 10.0       # how long a decoded image stays on screen (and in memory)
    accept_network_risk = false

A host that is not a loopback address puts the app on a network: anyone there who
gets hold of a link, or of the browser's cookie, sees and shares your pictures, over
plain HTTP. The daemon refuses such a host unless ``accept_network_risk = true``
says the user read that warning, and then logs it again at every start.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from cloudp2p.config import Field, Section, in_range

NETWORK_WARNING = (
    "the web app would listen on {host}, which is not a loopback address: anyone on that network "
    "who gets a link or the browser's cookie could see and share your images, and the traffic is "
    "plain HTTP"
)


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address such as 127.0.0.1, got {value!r}") from None
    return value


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


SECTION = Section(
    "web",
    {
        "enabled": Field(bool, True, doc="serve the web app from the client daemon"),
        "host": Field(str, "127.0.0.1", _host, "address the web app listens on (loopback unless accepted)"),
        "port": Field(int, 0, in_range(0, 65535), "TCP port of the web app; 0 lets the OS choose"),
        "view_seconds": Field(
            (int, float), 10.0, in_range(1, 600), "seconds a decoded image is shown (and kept in memory)"
        ),
        "accept_network_risk": Field(
            bool, False, doc="allow a host that is not loopback, after reading the warning in the docs"
        ),
    },
    doc="The local web app (cloudp2p.web).",
)


@attrs.frozen
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    view_seconds: float = 10.0
    accept_network_risk: bool = False

    @classmethod
    def from_section(cls, table: dict[str, Any]) -> WebSettings:
        return cls(
            enabled=table["enabled"],
            host=table["host"],
            port=int(table["port"]),
            view_seconds=float(table["view_seconds"]),
            accept_network_risk=table["accept_network_risk"],
        )

    def check(self, origin: str = "client.toml") -> None:
        """The network-risk rule (``ConfigError`` names the file and the key)."""
        from cloudp2p.errors import ConfigError

        if self.enabled and not is_loopback(self.host) and not self.accept_network_risk:
            raise ConfigError(
                f"{origin}: [web] host: {NETWORK_WARNING.format(host=self.host)}; "
                "use 127.0.0.1, or set accept_network_risk = true if you accept that"
            )
