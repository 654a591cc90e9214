"""Builds the client's own distribution, connlease-client (`make client`): a wheel and a
Lambda layer holding the package `connlease_client` alone, with the repository modules it
runs on vendored inside it (`vendor`), so that it collides with nothing a function has.

Not installed and not shipped: the build's own code, run from the repository root.
"""
