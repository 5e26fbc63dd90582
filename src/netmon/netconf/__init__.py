"""NETCONF: safe reply parsing (``xml``), one blocking session (``client``) whose threads
sleep while idle (``quiet``), the session pool of the poller's threads (``shared``), a
host's inventory target (``hosts``), and what the tasks make of replies: interface records
(``interfaces``), configuration text (``config``), capability facts (``facts``). Errors are
the NETCONF classes of ``netmon.errors``; docs/netconf.md has the whole picture."""
