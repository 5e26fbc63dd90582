"""The poller: inventory, task registry, schedule, poll health."""
