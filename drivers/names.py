"""What a name looks like (sites, gateways, devices, points, profiles): it becomes an MQTT
topic level, a time-series tag and part of file names, so no slashes, spaces or wildcards."""

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
