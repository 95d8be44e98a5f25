"""A cluster node in its own process, for test_heartbeats_during_encode: prints its events as JSON lines.

    python tests/stego/peer_node.py MY_ID MY_PORT PEER_ID PEER_PORT SECONDS
"""

import json
import sys
import time


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    from cloudp2p.membership.node import ClusterNode

    me, my_port, peer, peer_port = (int(a) for a in argv[:4])
    seconds = float(argv[4])
    node = ClusterNode(
        me, {peer: ("127.0.0.1", peer_port)}, b"heartbeat-test-secret-0123456789", clock=reactor,
        load_source=lambda: 0.0, heartbeat_interval=0.2, failure_timeout=1.0, election_timeout=0.3,
    )
    node.on_event(lambda event: print(json.dumps([time.time(), *map(str, event)]), flush=True))
    reactor.listenUDP(my_port, node.protocol, interface="127.0.0.1")
    node.start()
    reactor.callLater(seconds, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
