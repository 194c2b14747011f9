"""DICOM networking front door (DIMSE, PS3.7/PS3.8) with pynetdicom: verification, storage, query/retrieve."""
