"""Shared pytest set-up: fixture modules live in tests/fixtures/, one per real component."""

pytest_plugins = [
    "tests.fixtures.mosquitto",
    "tests.fixtures.serial_pair",
]
