"""The client daemon (`twistd cloudp2p-client`) and the `cloudp2p` command."""
