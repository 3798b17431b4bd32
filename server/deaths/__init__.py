"""Matching the civil registry's death register against the members (issue 17)."""
