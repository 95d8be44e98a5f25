"""The cloud's CA and server certificates, from the command line.

    python -m cloudp2p.tools.pki provision var/pki --servers 3 [--ip 127.0.0.1]
        # a CA (if missing) and server1.cloud ... server3.cloud (those missing); idempotent
    python -m cloudp2p.tools.pki ca DIR                       # a new CA (refuses to replace one)
    python -m cloudp2p.tools.pki issue DIR NAME [--ip IP]... [--days N] [--force]
    python -m cloudp2p.tools.pki show FILE                    # names and validity of a certificate

Files are written 0600 in a 0700 directory. Give each server its own pair and
the clients ``DIR/ca.crt`` (``cloudp2p init --ca DIR/ca.crt``); keep ``ca.key``
where only the operator can read it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from cloudp2p.errors import CloudP2PError, exit_code_for
from cloudp2p.secure import pki


def _name(text: str) -> str:
    try:
        return pki.check_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cloudp2p.tools.pki", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prov = sub.add_parser("provision", help="a CA and server1..N certificates, creating only what is missing")
    prov.add_argument("directory")
    prov.add_argument("--servers", type=_positive, default=3, help="how many servers (default 3)")
    prov.add_argument("--domain", default="cloud", help="names are serverN.DOMAIN (default cloud)")
    prov.add_argument("--ip", type=_ip, action="append", default=[], help="an IP address for every SAN")
    ca = sub.add_parser("ca", help="create a new CA")
    ca.add_argument("directory")
    ca.add_argument("--days", type=_positive, default=pki.DEFAULT_CA_DAYS)
    iss = sub.add_parser("issue", help="a key and certificate for one server name")
    iss.add_argument("directory")
    iss.add_argument("name", type=_name)
    iss.add_argument("--ip", type=_ip, action="append", default=[])
    iss.add_argument("--days", type=_positive, default=pki.DEFAULT_SERVER_DAYS)
    iss.add_argument("--force", action="store_true", help="replace an existing pair")
    show = sub.add_parser("show", help="print what a certificate says")
    show.add_argument("certificate")
    return p


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "provision":
            names = [pki.server_name(i, _name(args.domain)) for i in range(1, args.servers + 1)]
            issued = pki.provision(args.directory, names, ips=args.ip)
            print(f"CA: {pki.ca_paths(args.directory).certificate}")
            for item in issued.values():
                print(f"{item.name}: {item.certificate} {item.key}")
        elif args.command == "ca":
            print(pki.create_ca(args.directory, days=args.days).certificate)
        elif args.command == "issue":
            item = pki.issue(args.directory, args.name, ips=args.ip, days=args.days, replace=args.force)
            print(f"{item.name}: {item.certificate} {item.key}")
        else:
            print(json.dumps(pki.describe(args.certificate), indent=2))
    except CloudP2PError as e:
        print(f"pki: error: {e}", file=sys.stderr)
        return exit_code_for(e)
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
