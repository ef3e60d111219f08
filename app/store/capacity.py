"""How many more connections PostgreSQL accepts, so that `dalc run` can refuse a shape that would not fit.

Every dalc process opens its connections as it starts (app/runtime.py warms each thread up) and keeps
them. When the server has no slot left it refuses with `too many clients`, and the processes that came
last answer 503 for as long as it lasts: a second `make run` against the same server, or one beside other
clients, fails under load rather than at start. This reads what the server has room for.
"""
from __future__ import annotations

import dataclasses

from app.store.database import db

# max_connections less the slots this role may not take (superusers may take them all; PostgreSQL 16
# adds reserved_connections for roles granted pg_use_reserved_connections, counted here as not ours),
# less the client connections open now besides this one. A role without pg_read_all_stats sees no
# backend_type in other roles' rows, only their database and user: such a row counts as a connection
# (a background worker of another role's, rare and short-lived, would count too: the safe side).
ROOM_SQL = """
SELECT current_setting('max_connections')::int,
       CASE WHEN r.rolsuper THEN 0
            ELSE current_setting('superuser_reserved_connections')::int
                 + COALESCE(current_setting('reserved_connections', true)::int, 0)
       END,
       (SELECT count(*) FROM pg_stat_activity
        WHERE pid <> pg_backend_pid()
          AND (backend_type = 'client backend'
               OR (backend_type IS NULL AND datid IS NOT NULL AND usesysid IS NOT NULL)))
FROM pg_roles r WHERE r.rolname = current_user
"""


@dataclasses.dataclass(frozen=True)
class Room:
    max_connections: int
    reserved: int  # slots kept from this role
    in_use: int  # client connections open now, not counting the one that asked

    @property
    def free(self) -> int:
        """Connections this role can still open, counting the one that asked as closed."""
        return max(self.max_connections - self.reserved - self.in_use, 0)

    def describe(self) -> str:
        reserved = f", {self.reserved} kept for superusers" if self.reserved else ""
        return f"max_connections {self.max_connections}{reserved}, {self.in_use} in use by other clients"


def connection_room() -> Room:
    """Read the room on the PostgreSQL server the proxy points at."""
    max_connections, reserved, in_use = db.execute_sql(ROOM_SQL).fetchone()
    return Room(int(max_connections), int(reserved), int(in_use))
