"""Model-driven AWS rest-json wire layer: routing, request parsing/validation and response serialization."""
