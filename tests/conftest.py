"""Shared pytest set-up: fixture modules live in tests/fixtures/, one per real component."""

import os

pytest_plugins = [
    "tests.fixtures.mosquitto",
    "tests.fixtures.opcua",
    "tests.fixtures.serial_pair",
    "tests.fixtures.victoria",
]

# The catalog's system folder is the machine's /etc/edge-agent unless EDGE_AGENT_DATA says
# otherwise: tests see the default, whatever the shell that runs them has set.
os.environ.pop("EDGE_AGENT_DATA", None)
