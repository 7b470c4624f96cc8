"""The real local stack and media, shared by the test suite (tests/) and the benchmarks (load_tests/).

- ``media``: the real photos and clips (OpenCV's samples, scikit-image's astronaut, portraits from PyPI
  sdists), fetched once into .cache/test-media (``python -m devstack.media``).
- ``clips``: clips synthesised from those photos, and damaged ones.
- ``stack``: the local Triton + the real gateway, in-process under uvicorn or as its own process.

Neither the gateway nor its images import it.
"""
