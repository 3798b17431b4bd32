"""Faces: the face engine and the members' face templates (enrolled by visits,
server/visits/faces.py; used by the proof of life)."""
