"""The ``netmon`` command line."""

import warnings

# asyncssh (the lab's SSH server, netmiko's and napalm's peers) names cryptography's DSA
# types at import; cryptography deprecates them, and every command printed five lines of
# warnings about a key type netmon never uses. Only that warning, only from asyncssh.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")

from netmon.cli.main import app, main  # noqa: E402

__all__ = ["app", "main"]
