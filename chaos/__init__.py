"""netmon's Chaos Toolkit experiments (the YAML files here), as netmon.chaos.experiments."""
