"""netmon's Nornir tasks (installed as ``netmon.tasks``), one module per concern.

A task is a plain Nornir task whose ``Result.result`` is a list of ``netmon.records``;
the collection issues add system, interfaces, resources, BGP, LLDP and config backup.
"""
