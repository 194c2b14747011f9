"""Thin per-operation handlers: wire parameter dicts in, core calls, wire output dicts out."""
