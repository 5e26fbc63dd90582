"""netmon's exceptions: one tree, one root.

Third-party errors (asyncpg, PyYAML, pydantic, pgserver) are translated into this tree at
the boundary where they are caught, always with ``raise ... from exc`` so the cause stays
visible. Each class also inherits the builtin that matches its meaning, so callers that
only know the standard library still catch it.

    NetmonError
    ├── ConfigError (ValueError)                bad YAML, unknown key, wrong type, inline secret
    ├── DatabaseError
    │   ├── DatabaseUnavailableError (ConnectionError)   cannot reach / lost the server
    │   ├── EmbeddedDatabaseError (RuntimeError)         the embedded server would not start
    │   └── SchemaError
    │       ├── SchemaTooNewError       the database was migrated by a newer netmon
    │       └── SchemaOutdatedError     migrations pending; run ``netmon db upgrade``
    ├── WriteError
    │   └── SpoolError (OSError)        the on-disk spool cannot be written or read
    └── QueryError (ValueError)         a query asked for something impossible (bad span, step)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EmbeddedDatabaseError",
    "NetmonError",
    "QueryError",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SpoolError",
    "WriteError",
]


class NetmonError(Exception):
    """Root of every error netmon raises on purpose."""


class ConfigError(NetmonError, ValueError):
    """The configuration cannot be used. The message names the file, the key and what was
    expected."""


class DatabaseError(NetmonError):
    """Something about the database prevents the operation."""


class DatabaseUnavailableError(DatabaseError, ConnectionError):
    """The database cannot be reached (refused, reset, shut down, timed out)."""


class EmbeddedDatabaseError(DatabaseError, RuntimeError):
    """The embedded PostgreSQL could not be started or stopped."""


class SchemaError(DatabaseError):
    """The database schema does not match what this netmon expects."""


class SchemaTooNewError(SchemaError):
    """The database holds migrations this netmon does not know: it was upgraded by a newer
    release. Refusing to run protects the data from code that does not understand it."""


class SchemaOutdatedError(SchemaError):
    """Migrations are pending."""


class WriteError(NetmonError):
    """Samples could not be made durable."""


class SpoolError(WriteError, OSError):
    """The on-disk spool failed (disk full, permissions, corrupt segment)."""


class QueryError(NetmonError, ValueError):
    """A query cannot be answered as asked."""
