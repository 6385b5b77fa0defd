"""Turn off every library's telemetry and hub access before those libraries are imported.

Called first by the CLI entry point and by build_services; a user must not need to remember these.
"""

from __future__ import annotations

import os

# Each of these was seen to phone home, or to try a download, when unset (see FINDINGS.md).
OFFLINE_ENV: dict[str, str] = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # gradio launch() analytics
    "DO_NOT_TRACK": "1",  # unstructured (scarf) and others that honour it
    "SCARF_NO_ANALYTICS": "true",  # unstructured
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime 1.29-1.32 events host
    "HF_HUB_OFFLINE": "1",  # any Hugging Face hub access
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",  # avoids fork warnings in worker processes
    # FastAPI's OpenTelemetry would add OTLP exporters from OTEL_* variables if asked to: never.
    "FASTAPI_OTEL_AUTO_CONFIGURE": "false",
    "OTEL_SDK_DISABLED": "true",
}


def enforce_offline() -> None:
    """Set the offline/telemetry switches, overriding whatever the environment said: an appliance
    that promises no egress must not be talked out of it by a stray variable."""
    os.environ.update(OFFLINE_ENV)
    # llama-index reads its bundled NLTK data unless NLTK_DATA points elsewhere, in which case it
    # downloads what that folder lacks.
    os.environ.pop("NLTK_DATA", None)
