"""The embedded Triton of `python -m service`: its home, the process, its supervisor and thread defaults."""
