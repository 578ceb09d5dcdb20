"""Face-embedding networks."""
