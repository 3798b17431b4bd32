"""Caseworker tablets: bearer tokens per device, hashed, expiring, revocable."""
