"""SNMP: credentials from the inventory, and (with the SNMP issue) the shared client."""
