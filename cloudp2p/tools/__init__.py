"""Command-line tools for developers and operators (`make cluster`, the status command)."""
