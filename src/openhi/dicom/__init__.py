"""DICOM handling: metadata JSON values, level normalization, frame extraction, instance import, documents."""
