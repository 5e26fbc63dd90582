"""Where the hosts come from: the YAML folder or NetBox, synced into the devices table."""
