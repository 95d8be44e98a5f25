"""The share protocol's two sides: ``owner`` (the inbox) and ``viewer`` (the outbox), and their state
machines (``machine``)."""
