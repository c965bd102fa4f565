"""What to write instead of the connection keys other collectors use (host/port, unit, slave).

Plant engineers arrive with ThingsBoard gateway, Neuron, Node-RED or Telegraf configs in
mind: `host` + `port`, `unitId`, `slave_id`, `protocol: modbus`. Our keys are `url`,
`device_id` and `driver`; a "did you mean 'report'?" for `port` sends them the wrong way,
so these keys get a hint that says what to write, with their own values filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

_HOST_KEYS = ("host", "hostname", "ip", "ip_address", "ipaddress", "server", "broker")
_PORT_KEYS = ("port",)
_UNIT_KEYS = (
    "unit",
    "unitid",
    "unit_id",
    "slave",
    "slaveid",
    "slave_id",
    "slave_address",
    "station",
    "station_id",
    "stationid",
)
_KIND_KEYS = ("protocol", "type")
_USER_KEYS = {"user": "username", "login": "username", "pass": "password", "passwd": "password"}
# The scheme a url is most likely to need where the host/port keys were written.
_SCHEMES = {"mqtt": "mqtt", "influx": "http", "ingest": "http", "devices": "tcp"}


def _given(mapping: Mapping[object, object], keys: Sequence[str]) -> object:
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() in keys and value is not None:
            return value
    return None


def _scheme(section: Sequence[str | int]) -> str:
    for part in reversed(section):
        if isinstance(part, str) and part in _SCHEMES:
            return _SCHEMES[part]
    return "tcp"


def _url_hint(mapping: Mapping[object, object], section: Sequence[str | int]) -> str:
    host = _given(mapping, _HOST_KEYS)
    port = _given(mapping, _PORT_KEYS)
    scheme = _scheme(section)
    shown_host = host if isinstance(host, str | int) and not isinstance(host, bool) else "HOST"
    shown_port = f":{port}" if isinstance(port, int | str) and not isinstance(port, bool) else ""
    url = f"{scheme}://{shown_host}{shown_port}"
    text = f"host and port are one key here: url: {url}"
    if scheme == "tcp":
        text += "; the README's Devices section gives each driver's url"
    return text


def foreign_key_hint(
    key: object,
    mapping: object,
    known: Sequence[str],
    section: Sequence[str | int],
) -> str | None:
    """The hint for another collector's key `key` in `mapping` (at `section`), or None."""
    if not isinstance(key, str) or not isinstance(mapping, Mapping) or key in known:
        return None
    word = key.lower()
    if "url" in known and (word in _HOST_KEYS or word in _PORT_KEYS):
        return _url_hint(mapping, section)
    if "device_id" in known and word in _UNIT_KEYS:
        unit = mapping.get(key)
        shown = unit if isinstance(unit, int) and not isinstance(unit, bool) else "N"
        return f"the unit / slave / station address is device_id here: device_id: {shown}"
    if word in _USER_KEYS and _USER_KEYS[word] in known:
        meant = _USER_KEYS[word]
        return f"write {meant}" + (
            ": ${MQTT_PASSWORD}, secrets come from the environment" if meant == "password" else ""
        )
    return None


def driver_hint(mapping: object) -> str | None:
    """For a device entry without `driver:` that names its kind under another key."""
    if not isinstance(mapping, Mapping):
        return None
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() in _KIND_KEYS and isinstance(value, str):
            return f"write driver: {value} instead of {key}: {value}"
    return None
