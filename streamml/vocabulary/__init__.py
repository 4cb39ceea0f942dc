"""Shared vocabulary: the schemas that the operator, the model server and the clients all speak.

Neither the operator nor the model server imports the other; both import this package.
"""

#: the release (pyproject.toml's version); ``streamml.__version__`` is this, and the default
#: image names carry it
RELEASE = "0.1.0"
