"""The host's API contract, light enough for every process (no torch): limits, names and defaults
shared by the policy host (`engine.host`), its client (`engine.host_client`), the studio and training.
"""

from __future__ import annotations

TOKEN_ENV_VAR = "SMART_HOST_TOKEN"
DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_CANDIDATES = 16
MAX_BARS = 64
MAX_NEW_TOKENS = 4096
MAX_INFILL_START_BAR = 2048
# Audio scored per clip is cropped here: MAA averages 10-s windows, and a hostile MIDI file with a
# note at tick 10^9 must not make the host render hours of audio.
MAX_SCORE_SECONDS = 120.0
SCORE_SAMPLE_RATE = 16000
# /docs and the schema it loads stay reachable without the token (a browser cannot send a bearer
# header to fetch them); they describe the API, not any data. Everything else needs the token.
AUTH_EXEMPT_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
