"""SQLite metadata index: the embedded adapter of the MetadataIndex port."""
