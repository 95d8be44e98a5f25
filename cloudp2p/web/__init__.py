"""The local web app: a second front end of the client daemon, beside the `cloudp2p` command.

``twistd cloudp2p-client`` serves it on 127.0.0.1 (``[web]`` in client.toml);
``cloudp2p web`` prints a one-time link to it. See docs/client.md, "The web app".
"""
