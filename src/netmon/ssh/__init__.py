"""Collection over an SSH command line: netmiko sessions, TextFSM parsing with
ntc-templates, napalm getters."""
