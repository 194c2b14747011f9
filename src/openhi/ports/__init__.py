"""Ports: the small interfaces the core talks to."""
