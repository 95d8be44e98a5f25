"""Everything that keeps bytes on the wire secret and authentic.

- ``pki``: the cloud's certificate authority and one key + certificate per server.
- ``records``: DTLS record framing (splitting a datagram into records, spotting a ClientHello);
  OpenSSL does the record protection itself.
- ``tls``: pyOpenSSL contexts for both sides, HelloVerifyRequest cookies, certificate checks
  against the pinned CA with service_identity.
- ``association``: one DTLS 1.2 association over memory BIOs (handshake, timers, messages).
- ``endpoint``: the Twisted ``DatagramProtocol`` wrappers that put DTLS under an existing
  datagram protocol: ``DtlsServer`` (stateless cookies, bounded associations) and ``DtlsClient``
  (one association per server, kept alive, re-handshake after a server restart).
"""
