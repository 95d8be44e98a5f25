"""The cloud server daemon: config composition (config.py), the service (service.py), twistd glue (tap.py)."""
