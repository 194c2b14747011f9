"""DICOMweb front door (PS3.18): WADO-RS, QIDO-RS and STOW-RS on HealthImaging's ``/datastore/{id}`` paths."""
