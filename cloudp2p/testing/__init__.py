"""The test harness: fakes (memnet) and launchers of real daemons (servers, clients, a local cloud).

Product code never imports this package (tests/test_imports.py keeps it so).
"""
