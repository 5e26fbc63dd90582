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
    ├── CoreUnavailableError (ConnectionError)   the API could not ask the core of `netmon run`
    └── CollectionError                 one device could not be polled; the others go on
        ├── TaskError                   a task raised something that is not a CollectionError
        ├── SnmpError
        │   ├── SnmpTimeoutError (TimeoutError)        no answer after timeout x retries
        │   │   ├── SnmpOverloadError                  netmon's engine was starved, not the device
        │   │   └── SnmpSlowError                      answers arrive, after the timeout
        │   ├── SnmpSecurityError (PermissionError)    USM refused us: time window, security level
        │   │   ├── SnmpUnknownUserError               the agent has no such user
        │   │   ├── SnmpWrongDigestError               wrong auth key or auth protocol
        │   │   └── SnmpDecryptionError                wrong priv key or priv protocol
        │   ├── SnmpNoSuchError (LookupError)          noSuchObject / noSuchInstance where required
        │   ├── SnmpEndOfMibError (LookupError)        endOfMibView where a value was required
        │   ├── SnmpAgentError                         the agent answered with an error-status
        │   └── SnmpMalformedReplyError (ValueError)   the agent answered garbage
        ├── NetconfError
        │   ├── NetconfTimeoutError (TimeoutError)          connect, hello or RPC took too long
        │   ├── NetconfConnectionError (ConnectionError)     no TCP/SSH session, or it was lost
        │   │   └── NetconfRefusedError (ConnectionRefusedError)   nothing listens on the port
        │   ├── NetconfAuthError (PermissionError)           the server refused our credentials
        │   ├── NetconfHostKeyError (PermissionError)        host key unknown or not the pinned one
        │   ├── NetconfCapabilityError (LookupError)         the server does not advertise it
        │   ├── NetconfRpcError                              <rpc-error> from the server
        │   └── NetconfMalformedReplyError (ValueError)      not a well-formed, expected reply
        │       ├── NetconfUnsafeXmlError                    DOCTYPE / ENTITY declarations
        │       └── NetconfReplyTooLargeError                over the configured byte bound
        └── CliError                                 SSH command line (netmiko, napalm)
            ├── CliTimeoutError (TimeoutError)       connect, login or output took too long
            ├── CliConnectionError (ConnectionError) no SSH session, or it was lost
            ├── CliAuthError (PermissionError)       credentials or host key refused
            ├── CliCommandError                      the device refused the command
            └── CliParseError (ValueError)           output that does not parse (command, sample)

ncclient, paramiko, netmiko and napalm errors are translated at one boundary each
(``netmon.netconf.client``, ``netmon.ssh``). No message carries a password or key.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CliAuthError",
    "CliCommandError",
    "CliConnectionError",
    "CliError",
    "CliParseError",
    "CliTimeoutError",
    "CollectionError",
    "ConfigError",
    "CoreUnavailableError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EmbeddedDatabaseError",
    "NetconfAuthError",
    "NetconfCapabilityError",
    "NetconfConnectionError",
    "NetconfError",
    "NetconfHostKeyError",
    "NetconfMalformedReplyError",
    "NetconfRefusedError",
    "NetconfReplyTooLargeError",
    "NetconfRpcError",
    "NetconfTimeoutError",
    "NetconfUnsafeXmlError",
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
    "SnmpOverloadError",
    "SnmpSecurityError",
    "SnmpSlowError",
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


class CoreUnavailableError(NetmonError, ConnectionError):
    """An API process of ``netmon run`` could not ask its core (poller, writer, alerting)
    over the control socket: the core is stopping, overloaded, or refused the request."""


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


class SnmpOverloadError(SnmpTimeoutError):
    """A request timed out because netmon's own SNMP engine was starved (CPU), not because
    the device did not answer. Does not make the device unreachable."""

    error_class = "overload"


class SnmpSlowError(SnmpTimeoutError):
    """The device answers, but after the timeout: its answers arrive late. Does not make
    the device unreachable; raise ``snmp.timeout``."""

    error_class = "slow"


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


class NetconfError(CollectionError):
    """A NETCONF operation did not give the data asked for."""

    error_class = "netconf"


class NetconfTimeoutError(NetconfError, TimeoutError):
    """No TCP connection, SSH handshake, hello or RPC reply within its timeout."""

    error_class = "netconf_timeout"


class NetconfConnectionError(NetconfError, ConnectionError):
    """The transport could not be opened, or was closed under us."""

    error_class = "netconf_connection"


class NetconfRefusedError(NetconfConnectionError, ConnectionRefusedError):
    """The device refused the TCP connection: nothing listens on the port."""

    error_class = "netconf_refused"


class NetconfAuthError(NetconfError, PermissionError):
    """SSH authentication failed (wrong user, password or key)."""

    error_class = "netconf_auth"


class NetconfHostKeyError(NetconfError, PermissionError):
    """The server's host key is not in the known_hosts file, or is not the pinned key."""

    error_class = "netconf_host_key"


class NetconfCapabilityError(NetconfError, LookupError):
    """The operation needs a capability the server did not advertise (:candidate, :xpath)."""

    error_class = "netconf_capability"


class NetconfRpcError(NetconfError):
    """The server answered with an ``<rpc-error>`` (first error's fields kept)."""

    error_class = "netconf_rpc_error"

    def __init__(
        self, message: str, *, tag: str = "", severity: str = "error", error_type: str = ""
    ) -> None:
        super().__init__(message)
        self.tag = tag
        self.severity = severity
        self.error_type = error_type


class NetconfMalformedReplyError(NetconfError, ValueError):
    """The server answered with something that is not a well-formed, expected reply."""

    error_class = "netconf_malformed"


class NetconfUnsafeXmlError(NetconfMalformedReplyError):
    """The reply declares a DOCTYPE or entities (entity expansion, XXE): never parsed."""

    error_class = "netconf_unsafe_xml"


class NetconfReplyTooLargeError(NetconfMalformedReplyError):
    """The reply is larger than the configured bound: never parsed."""

    error_class = "netconf_too_large"


class CliError(CollectionError):
    """Collection over an SSH command line (netmiko, napalm) failed."""

    error_class = "cli"


class CliTimeoutError(CliError, TimeoutError):
    """Connect, login or a command's output took too long."""

    error_class = "cli_timeout"


class CliConnectionError(CliError, ConnectionError):
    """No SSH session, or it was lost."""

    error_class = "cli_connection"


class CliAuthError(CliError, PermissionError):
    """The device refused our credentials or its host key is not the trusted one."""

    error_class = "cli_auth"


class CliCommandError(CliError):
    """The device refused a command (``% Invalid input``, ``Unknown command``)."""

    error_class = "cli_command"

    def __init__(self, message: str, *, command: str = "") -> None:
        super().__init__(message)
        self.command = command


class CliParseError(CliError, ValueError):
    """A command's output did not parse (no template matched, no rows, a field of the wrong
    shape). ``command`` and a bounded ``sample`` of the output are kept for the operator."""

    error_class = "cli_parse"

    def __init__(self, message: str, *, command: str = "", sample: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.sample = sample
