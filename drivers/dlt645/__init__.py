"""DL/T 645-2007 driver: frames, BCD formats, identifier table, config, line, driver."""
