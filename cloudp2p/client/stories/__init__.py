"""The user stories: each module a group of commands and the peer messages that carry them.

``account`` (register, login, logout, trust, status, counters, shutdown), ``images``
(encrypt, publish, unpublish, users), ``sharing.owner`` and ``sharing.viewer`` (the two
sides of the share protocol, each with its state machine in ``sharing.machine``),
``viewing`` (images, view), ``web`` (the link to the web app). A story gets the parts
it uses (``parts.Parts``) and its fellow stories explicitly; ``cloudp2p.client.app``
builds them, and the command table (``cloudp2p.client.table``) names their handlers.
"""
