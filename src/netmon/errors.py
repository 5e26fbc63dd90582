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
    ├── QueryError (ValueError)         a query asked for something impossible (bad span, step)
    └── CollectionError                 one device could not be polled; the others go on
        ├── TaskError                   a task raised something that is not a CollectionError
        └── SnmpError
            ├── SnmpTimeoutError (TimeoutError)        no answer after timeout x retries
            ├── SnmpSecurityError (PermissionError)    USM refused us: time window, security level
            │   ├── SnmpUnknownUserError               the agent has no such user
            │   ├── SnmpWrongDigestError               wrong auth key or auth protocol
            │   └── SnmpDecryptionError                wrong priv key or priv protocol
            ├── SnmpNoSuchError (LookupError)          noSuchObject / noSuchInstance where required
            ├── SnmpEndOfMibError (LookupError)        endOfMibView where a value was required
            ├── SnmpAgentError                         the agent answered with an error-status
            └── SnmpMalformedReplyError (ValueError)   the agent answered garbage
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CollectionError",
    "ConfigError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EmbeddedDatabaseError",
    "NetmonError",
    "QueryError",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SnmpAgentError",
    "SnmpDecryptionError",
    "SnmpEndOfMibError",
    "SnmpError",
    "SnmpMalformedReplyError",
    "SnmpNoSuchError",
    "SnmpSecurityError",
    "SnmpTimeoutError",
    "SnmpUnknownUserError",
    "SnmpWrongDigestError",
    "SpoolError",
    "TaskError",
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


class CollectionError(NetmonError):
    """A device could not be polled. It fails that device's poll only.

    ``error_class`` is the short, stable name recorded in poll health and counted in
    metrics (``timeout``, ``wrong_digest``, ...); the message says what happened.
    """

    error_class: ClassVar[str] = "collection"


class TaskError(CollectionError):
    """A task raised an exception that is not a :class:`CollectionError` (a bug in the
    task, or in what it called). The original is the ``__cause__``."""

    error_class = "task"


class SnmpError(CollectionError):
    """An SNMP request did not give the values asked for."""

    error_class = "snmp"


class SnmpTimeoutError(SnmpError, TimeoutError):
    """No answer within the timeout, retries included: the agent is down, silent, or
    unreachable."""

    error_class = "timeout"


class SnmpSecurityError(SnmpError, PermissionError):
    """The agent's USM refused the request (unsupported security level, clock out of the
    time window after resynchronising)."""

    error_class = "security"


class SnmpUnknownUserError(SnmpSecurityError):
    """The agent has no user of that name (usmStatsUnknownUserNames)."""

    error_class = "unknown_user"


class SnmpWrongDigestError(SnmpSecurityError):
    """The message digest did not match: wrong auth key or auth protocol
    (usmStatsWrongDigests)."""

    error_class = "wrong_digest"


class SnmpDecryptionError(SnmpSecurityError):
    """The agent could not decrypt the request: wrong priv key or priv protocol
    (usmStatsDecryptionErrors)."""

    error_class = "decryption"


class SnmpNoSuchError(SnmpError, LookupError):
    """noSuchObject / noSuchInstance for an OID the task required."""

    error_class = "no_such"


class SnmpEndOfMibError(SnmpError, LookupError):
    """endOfMibView where a value was required."""

    error_class = "end_of_mib"


class SnmpAgentError(SnmpError):
    """The agent answered with a non-zero error-status (genErr, tooBig, ...)."""

    error_class = "agent_error"


class SnmpMalformedReplyError(SnmpError, ValueError):
    """The agent answered, but not with a valid SNMP reply to the request (undecodable
    bytes, a response that does not match, OIDs that do not increase in a walk)."""

    error_class = "malformed"
