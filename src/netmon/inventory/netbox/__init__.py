"""NetBox as netmon's inventory: the REST client, the mapping of devices and VMs to
hosts, the source the sync reads (full, by ids, by change log), webhooks, the journal
write-back, and a Nornir inventory plugin for users' own scripts.

The plugin (``nornir_plugin``) is not imported here: Nornir loads it by entry point.
"""

from netmon.inventory.netbox.client import (
    NetBoxAuthError,
    NetBoxClient,
    NetBoxError,
    NetBoxRequestError,
    NetBoxTimeoutError,
    NetBoxUnavailableError,
)
from netmon.inventory.netbox.mapping import VcMember, external_id, map_device, parse_external_id
from netmon.inventory.netbox.source import ChangeBatch, ChangeCursor, NetBoxSource
from netmon.inventory.netbox.webhook import WebhookChange, parse_event, verify_signature
from netmon.inventory.netbox.writeback import JournalResult, journal

__all__ = [
    "ChangeBatch",
    "ChangeCursor",
    "JournalResult",
    "NetBoxAuthError",
    "NetBoxClient",
    "NetBoxError",
    "NetBoxRequestError",
    "NetBoxSource",
    "NetBoxTimeoutError",
    "NetBoxUnavailableError",
    "VcMember",
    "WebhookChange",
    "external_id",
    "journal",
    "map_device",
    "parse_event",
    "parse_external_id",
    "verify_signature",
]
