"""Scripted demonstrations on a local cluster (`make demo-*`)."""
