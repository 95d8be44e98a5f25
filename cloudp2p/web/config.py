"""The ``[web]`` section of client.toml: ``WebSettings`` is its schema and its value.

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

from cloudp2p.config import in_range, ip_address, section, setting

NETWORK_WARNING = (
    "the web app would listen on {host}, which is not a loopback address: anyone on that network "
    "who gets a link or the browser's cookie could see and share your images, and the traffic is "
    "plain HTTP"
)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


@section("web")
class WebSettings:
    """The local web app (cloudp2p.web)."""

    enabled: bool = setting(True, doc="serve the web app from the client daemon")
    host: str = setting("127.0.0.1", ip_address, "address the web app listens on (loopback unless accepted)")
    port: int = setting(0, in_range(0, 65535), "TCP port of the web app; 0 lets the OS choose")
    view_seconds: float = setting(
        10.0, in_range(1, 600), "seconds a decoded image is shown (and kept in memory)"
    )
    accept_network_risk: bool = setting(
        False, doc="allow a host that is not loopback, after reading the warning in the docs"
    )

    def check(self, origin: str = "client.toml") -> None:
        """The network-risk rule (``ConfigError`` names the file and the key)."""
        from cloudp2p.errors import ConfigError

        if self.enabled and not is_loopback(self.host) and not self.accept_network_risk:
            raise ConfigError(
                f"{origin}: [web] host: {NETWORK_WARNING.format(host=self.host)}; "
                "use 127.0.0.1, or set accept_network_risk = true if you accept that"
            )


SECTION = WebSettings.SECTION
