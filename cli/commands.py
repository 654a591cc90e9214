"""The app with every command on it: each module adds its own."""

from cli import release, set_quota, status
from cli.app import app

__all__ = ["app", "release", "set_quota", "status"]
