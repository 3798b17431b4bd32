"""Households (cases), their members, the case workflow and the allowance."""
