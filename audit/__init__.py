"""Hash-chained, Merkle-proven, signed audit trail, verifiable offline."""
