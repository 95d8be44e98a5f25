"""cloudp2p: peer-to-peer image sharing with steganographic, view-limited access rights."""

__version__ = "0.1.0"
