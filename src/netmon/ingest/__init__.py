"""Turning raw collected values into what users read: rates from counters."""
