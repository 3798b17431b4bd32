"""Data-key rotation: the encrypted columns (found by introspection), the registry of
look-up-hash columns, and ``dibao keys rotate`` / ``dibao keys status``
(docs/decisions/0010-data-key-rotation.md)."""
