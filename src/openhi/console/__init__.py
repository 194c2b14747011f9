"""The web console (server-rendered pages over the core services) and the OHIF viewer it serves."""
