"""A throw-away PKI for the secure-channel tests: the cloud's CA and some bad certificates."""

from __future__ import annotations

import datetime

import attrs
import pytest

from cloudp2p.secure import pki


@attrs.frozen
class TestPki:
    ca: str
    server1: pki.Issued
    server2: pki.Issued
    by_ip: pki.Issued  # server3.cloud with 127.0.0.1 in its SAN
    expired: pki.Issued  # server1.cloud, expired yesterday
    other_ca: str
    foreign: pki.Issued  # server1.cloud signed by the other CA


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory) -> TestPki:
    root = tmp_path_factory.mktemp("pki")
    issued = pki.provision(root / "cloud", ["server1.cloud", "server2.cloud"])
    by_ip = pki.issue(root / "cloud", "server3.cloud", ips=["127.0.0.1"])
    now = datetime.datetime.now(datetime.UTC)
    _copy_ca(root / "cloud", root / "expired")
    expired = pki.issue(
        root / "expired",
        "server1.cloud",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    foreign = pki.provision(root / "other", ["server1.cloud"])["server1.cloud"]
    return TestPki(
        ca=str(pki.ca_paths(root / "cloud").certificate),
        server1=issued["server1.cloud"],
        server2=issued["server2.cloud"],
        by_ip=by_ip,
        expired=expired,
        other_ca=str(pki.ca_paths(root / "other").certificate),
        foreign=foreign,
    )


def _copy_ca(src, dst) -> None:
    """The same CA in a second directory, so an expired certificate of the same name can be issued."""
    dst.mkdir(mode=0o700)
    for path in (pki.ca_paths(src).certificate, pki.ca_paths(src).key):
        target = dst / path.name
        target.write_bytes(path.read_bytes())
        target.chmod(0o600)
