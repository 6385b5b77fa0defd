"""Is the appliance ready: the store answers and the chat model is loaded (or its server has it).
What /readyz reports (only "ready" or the part that is not) and the Status tab shows in full."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.services import Services


class NotReady(Exception):
    def __init__(self, component: str, cause: Exception) -> None:
        super().__init__(f"{component}: {cause}")
        self.component = component


def component_of(exc: Exception) -> str:
    """What an anonymous probe may learn of a failure: which part, never the hosts or paths."""
    return f"{exc.component} unavailable (see the server log)" if isinstance(exc, NotReady) else "not ready"


class Health:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._model_check: tuple[float, str | Exception] | None = None  # the last ask of a remote model

    def readiness(self) -> dict[str, Any]:
        """The chunk count and the model; raises NotReady naming the part that is not ready."""
        services = self._services
        try:
            chunks = services.store.count()
        except Exception as exc:
            raise NotReady("store", exc) from exc
        if services.settings.llm.provider == "embedded":
            return {"chunks": chunks, "model": services.llm.metadata.model_name}
        # Ask the model server at most every 15 s, failures included: probes come often, and a hung
        # server must not tie up a thread per probe.
        cached = self._model_check
        if cached is None or time.monotonic() - cached[0] > 15:
            try:
                outcome: str | Exception = services.llm.check()
            except Exception as exc:
                outcome = exc
            cached = self._model_check = (time.monotonic(), outcome)
        if isinstance(cached[1], Exception):
            raise NotReady("chat model", cached[1])
        return {"chunks": chunks, "model": cached[1]}
