"""Storage adapters implementing the ports."""
