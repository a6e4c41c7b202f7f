"""The node: the one place that knows every subsystem and wires them into one process."""
