"""Rate limits per principal and operation, and fault injection for client tests."""
