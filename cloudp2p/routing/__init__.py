"""Client requests: the client wire format, the server-side router and the client-side router."""
