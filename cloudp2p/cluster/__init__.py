"""The server cluster: membership, failure detection, load, coordinator election and request routing."""
