"""PostgreSQL metadata index: the scale-out adapter of the MetadataIndex port."""
