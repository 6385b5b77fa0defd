"""Secrets refused when weak (they are read from files where the settings say `file:/path`: settings.py).

Outside auth.dev_mode, `serve` does not start with an empty, short or placeholder secret, nor with
sign-in turned off beyond loopback. Secret values are pydantic SecretStr: never printed or logged.
"""

from __future__ import annotations

from appliance.settings import Settings, SettingsError, secret_fields

PLACEHOLDERS = ("changeme", "change-me", "change_me", "replace", "secret", "password", "example", "default",
                "admin", "test", "xxx", "todo", "your-", "none", "null")
MIN_LENGTH = 16


def weak_secrets(settings: Settings) -> list[str]:
    found = []
    for _owner, _name, path, value in secret_fields(settings):
        raw = value.get_secret_value()
        lowered = raw.lower()
        if len(raw) < MIN_LENGTH or any(p in lowered for p in PLACEHOLDERS) or len(set(raw)) < 6:
            found.append(path)
    return found


def refuse_weak_secrets(settings: Settings) -> None:
    problems = [f"{p}: weak or placeholder secret (at least {MIN_LENGTH} random characters)"
                for p in weak_secrets(settings)]
    beyond_loopback = not settings.server.loopback_only
    if beyond_loopback and settings.auth.required is False:
        problems.append(f"auth.required is false while the server listens on {settings.server.host}")
    if beyond_loopback and settings.server.require_api_key is False:
        problems.append(f"server.require_api_key is false while the server listens on {settings.server.host}")
    if not problems:
        return
    if settings.auth.dev_mode:
        print("WARNING (auth.dev_mode): " + "; ".join(problems), flush=True)
        return
    raise SettingsError("refusing to start: " + "; ".join(problems) + ". Fix the settings, or set "
                        "auth.dev_mode: true on a machine that holds no real documents.")
