"""Ingest sources (files, PostgreSQL) into the enclave with provenance."""
