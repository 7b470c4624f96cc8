"""Orchestration: one request from admission to its answer, for images (image.py), clips (clip.py) and
/annotate (annotation.py, drawing.py), with batching, augmentation, prompts, similarity and wording."""
