"""Training, export and evaluation of the face restorer. Importing `streamer` first sets the OpenMP
wait policy before any training module loads torch (see streamer/__init__.py)."""

import streamer  # noqa: F401
