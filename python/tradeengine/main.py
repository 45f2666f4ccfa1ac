"""`uvicorn tradeengine.main:app`: the app built from the environment (and `.env`).

A bad setting stops the start with a message naming the variable (exit status 2).
"""

import sys

from tradeengine.api.app import create_app
from tradeengine.settings import SettingsError

try:
    app = create_app(exit_process_on_shutdown=True)
except SettingsError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
