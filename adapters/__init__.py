"""Adapters: each implements a domain port on a concrete technology."""
