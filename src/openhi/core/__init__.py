"""The core: datastores, image sets and their versions, import jobs, search. Knows no HTTP or SQL."""
