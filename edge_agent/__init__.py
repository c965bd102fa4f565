"""edge-agent: polls Modbus and OPC UA devices at the edge and publishes readings over MQTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
