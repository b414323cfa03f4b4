"""The governed DuckDB enclave and what registers data into it.

The enclave and its shared form, the registry, catalog, certificates and demo data.
"""
