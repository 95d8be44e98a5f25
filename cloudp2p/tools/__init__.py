"""Command-line tools for developers and operators (the status command, `make demo`)."""
