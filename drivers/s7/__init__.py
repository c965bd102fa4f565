"""Siemens S7 PLCs: S7 communication over ISO-on-TCP (port 102)."""
