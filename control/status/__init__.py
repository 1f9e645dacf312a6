"""The live status view (HAProxy's stats page for lbfast): one document built from what the
daemon knows, served as /status and /status.json and drawn by `lbfast top`."""
from control.status.view import StatusView

__all__ = ["StatusView"]
