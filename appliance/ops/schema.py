"""`appliance db status` and `appliance db upgrade`: where each store's tables stand against the newest
migration, and bringing them there (opening a store does the same for that store, at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.stores.database import Where, connect, head, open_database, revision

if TYPE_CHECKING:
    from appliance.settings import Settings


@dataclass
class StoreSchema:
    store: str
    where: str  # the file, or the shared database's name
    revision: str | None  # None: no tables yet, or made before migrations
    head: str

    @property
    def current(self) -> bool:
        return self.revision == self.head


def databases(settings: Settings) -> dict[str, Where]:
    """Each store's database: its SQLite file, or the shared database (with the replicas' counters)."""
    out = {"users": settings.database_for(settings.users_path),
           "api_keys": settings.database_for(settings.api_keys_path),
           "conversations": settings.database_for(settings.conversations_path),
           "manifest": settings.database_for(settings.manifest_path)}
    if settings.database.url is not None:
        out["shared_state"] = settings.database_for(settings.users_path)
    return out


def status(settings: Settings) -> list[StoreSchema]:
    return [_state(store, where, upgrade=False) for store, where in databases(settings).items()]


def upgrade_all(settings: Settings) -> list[StoreSchema]:
    return [_state(store, where, upgrade=True) for store, where in databases(settings).items()]


def _state(store: str, where: Where, upgrade: bool) -> StoreSchema:
    """Where the store's tables stand (after upgrading them, with `upgrade`); a SQLite file that does not
    exist is only reported, not created."""
    if not upgrade and isinstance(where, Path) and not where.exists():
        return StoreSchema(store, str(where), None, head(store))
    db = open_database(where, store) if upgrade else connect(where)
    try:
        with db.begin() as tx:
            return StoreSchema(store, db.name, revision(tx, store), head(store))
    finally:
        db.close()
