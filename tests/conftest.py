"""Shared pytest set-up: fixture modules live in tests/fixtures/, one per real component."""

import os

import pytest

pytest_plugins = [
    "tests.fixtures.mosquitto",
    "tests.fixtures.opcua",
    "tests.fixtures.serial_pair",
    "tests.fixtures.victoria",
]

# The catalog's system folder is the machine's /etc/edge-agent unless EDGE_AGENT_DATA says
# otherwise: tests see the default, whatever the shell that runs them has set.
os.environ.pop("EDGE_AGENT_DATA", None)

# Real servers make a test end to end: it is marked `e2e`, so `-m "not e2e and not slow"`
# is the fast, unit-only subset.
SERVER_FIXTURES = {
    "mosquitto",
    "mosquitto_fresh",
    "mosquitto_secure",
    "victoria",
    "victoria_fresh",
    "victoria_tls",
    "opcua_plc",
    "opcua_plc_session",
    "serial_pair",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # tests/e2e/ holds the tests that start servers themselves (simulators, HTTPS
        # receivers, node, the agent as a process, the installed wheel).
        if "e2e" in item.path.parts or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
