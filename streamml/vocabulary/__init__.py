"""Shared vocabulary: the schemas that the operator, the model server and the clients all speak.

Neither the operator nor the model server imports the other; both import this package.
"""
