"""The browser viewer (static files served by realtime.server)."""
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent
