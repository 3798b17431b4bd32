"""Monthly proof of life: a few selfie frames, liveness challenges, and a face match."""
