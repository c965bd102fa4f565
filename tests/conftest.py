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

# Real servers make a test end to end: it is marked `e2e`, so `-m "not e2e"` is the fast,
# unit-only subset (tests that start servers themselves carry the marker in their module).
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


# Modules whose tests start real servers themselves (simulators on loopback, HTTPS
# receivers, node, subprocesses of the agent).
E2E_MODULES = {
    "test_diagnose",
    "test_dlt645_bus",
    "test_energy_end_to_end",
    "test_grafana_flux",
    "test_grafana_push",
    "test_ingest_tls",
    "test_modbus_answers",
    "test_opcua_driver",
    "test_opcua_recovery",
    "test_opcua_security",
    "test_outbox_disk",
    "test_platform_uplink",
    "test_platform_uplink_metrics",
    "test_reload",
    "test_report_end_to_end",
    "test_simulator_control",
    "test_simulator_server",
    "test_status_page",
    "test_store_and_forward",
    "test_uplink_end_to_end",
    "test_user_habits",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in E2E_MODULES or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
