"""netmon's Chaos Toolkit experiments (the YAML files here), installed as netmon.chaos.experiments."""
