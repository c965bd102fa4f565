"""The table of protocols: the `driver:` value of a site file -> its plugin, imported on use.

Adding a protocol is its package under drivers/ (with `plugin.py`), its simulator package,
and one line here (as Telegraf's plugins/inputs/all or ThingsBoard's connector table).
Plugins are imported when first asked for, so a site that names only Modbus devices never
loads another protocol's stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.contract import ProtocolPlugin

PROTOCOLS: dict[str, str] = {
    "modbus": "drivers.modbus.plugin:PLUGIN",
    "opcua": "drivers.opcua.plugin:PLUGIN",
    "dlt645": "drivers.dlt645.plugin:PLUGIN",
    "s7": "drivers.s7.plugin:PLUGIN",
}

_loaded: dict[str, ProtocolPlugin[Any, Any]] = {}


def plugin(name: str) -> ProtocolPlugin[Any, Any]:
    """The plugin of a protocol; KeyError for a name not in PROTOCOLS."""
    found = _loaded.get(name)
    if found is None:
        module, _, attribute = PROTOCOLS[name].partition(":")
        found = getattr(importlib.import_module(module), attribute)
        _loaded[name] = found
    return found


def plugins() -> list[ProtocolPlugin[Any, Any]]:
    """Every protocol's plugin, in the table's order."""
    return [plugin(name) for name in PROTOCOLS]
