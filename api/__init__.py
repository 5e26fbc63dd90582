"""netmon's Litestar application (installed as ``netmon.api``).

Controllers, guards and WebSocket handlers arrive with the API issue; this package exists
now so the layout of DESIGN.md and the install mapping are fixed from the first release.
"""
