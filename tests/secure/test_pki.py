"""The cloud's CA and server identities: files, modes, idempotence, what the certificates say."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509

from cloudp2p.errors import ConfigError
from cloudp2p.secure import pki
from cloudp2p.tools import pki as pki_tool


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_provision_creates_ca_and_servers_with_private_modes(tmp_path, capsys):
    target = tmp_path / "pki"
    assert pki_tool.run(["provision", str(target), "--servers", "3", "--ip", "127.0.0.1"]) == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(
        ["ca.crt", "ca.key"] + [f"server{i}.cloud.{ext}" for i in (1, 2, 3) for ext in ("crt", "key")]
    )
    assert mode(target) == 0o700 and all(mode(p) == 0o600 for p in target.iterdir())
    cert = x509.load_pem_x509_certificate((target / "server2.cloud.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["server2.cloud"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca = x509.load_pem_x509_certificate((target / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert "server3.cloud" in capsys.readouterr().out


def test_provision_keeps_what_exists(tmp_path):
    first = pki.provision(tmp_path, ["server1.cloud"])
    before = first["server1.cloud"].certificate.read_bytes(), pki.ca_paths(tmp_path).key.read_bytes()
    second = pki.provision(tmp_path, ["server1.cloud", "server2.cloud"])
    after = second["server1.cloud"].certificate.read_bytes(), pki.ca_paths(tmp_path).key.read_bytes()
    assert before == after and second["server2.cloud"].key.exists()


def test_refuses_to_replace_a_ca_or_an_identity(tmp_path, capsys):
    pki.provision(tmp_path, ["server1.cloud"])
    with pytest.raises(ConfigError, match="a CA exists already"):
        pki.create_ca(tmp_path)
    assert pki_tool.run(["issue", str(tmp_path), "server1.cloud"]) == 3
    assert "not replacing it" in capsys.readouterr().err
    assert pki_tool.run(["issue", str(tmp_path), "server1.cloud", "--force"]) == 0


def test_bad_names_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pki_tool.run(["issue", str(tmp_path), "Server_1!"])
    assert e.value.code == 2 and "DNS name" in capsys.readouterr().err


def test_show_reads_a_certificate(tmp_path, capsys):
    issued = pki.provision(tmp_path, ["server1.cloud"])["server1.cloud"]
    assert pki_tool.run(["show", str(issued.certificate)]) == 0
    out = capsys.readouterr().out
    assert '"server1.cloud"' in out and "cloudp2p cloud CA" in out
