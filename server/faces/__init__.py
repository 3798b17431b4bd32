"""Faces: templates enrolled from visit portraits, 1:N search across households."""
