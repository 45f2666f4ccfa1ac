"""`uvicorn tradeengine.main:app`: the app built from the environment (and `.env`)."""

from tradeengine.api.app import create_app

app = create_app()
