"""Shared by every part of a node: config, wire format, connections, server, commands, logs."""
