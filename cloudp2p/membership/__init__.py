"""Server-to-server membership: authenticated messages, failure detection, load, coordinator election."""
