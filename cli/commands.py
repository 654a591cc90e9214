"""The app with every command on it: each module adds its own."""

from cli import reconcile, release, set_quota, status, watch
from cli.app import app

__all__ = ["app", "reconcile", "release", "set_quota", "status", "watch"]
