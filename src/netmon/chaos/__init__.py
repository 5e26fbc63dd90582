"""Chaos experiments against netmon: fault tools, the Chaos Toolkit extension, the judge."""
