"""Shared pytest set-up: fixture modules live in tests/fixtures/, one per real component."""

pytest_plugins = [
    "tests.fixtures.mosquitto",
    "tests.fixtures.opcua",
    "tests.fixtures.serial_pair",
    "tests.fixtures.victoria",
]
