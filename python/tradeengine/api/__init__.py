"""The HTTP API (Starlette)."""

from tradeengine.api.app import create_app

__all__ = ["create_app"]
