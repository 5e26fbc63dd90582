"""netmon's Litestar application (installed as ``netmon.api``).

``app.create_app`` builds it; ``server.ApiServer`` serves it (inside ``netmon run`` or as
``netmon api``). docs/api.md has the layout, the conventions and the endpoints.
"""
