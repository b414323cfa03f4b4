"""The query path.

Parse, lineage, guard, rewrite, disclosure, noise, release, receipts, the query service.
"""
