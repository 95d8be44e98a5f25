"""Encryption: the container hidden in a stego image, signed access rights, the view ledger, `encrypt`.

Modules: ``keys`` (user key pairs), ``rights`` (signed rights), ``format``
(the hidden byte layout and its crypto), ``container`` (the API on PNG bytes),
``ledger`` (the viewer's local ledger), ``config`` (``[encryption]``), ``service``
(the server's engine: runs seals in the pool), ``ops`` (the ``encrypt`` op).
See docs/encryption.md.
"""
