"""netmon's Piccolo app: the database schema and its migrations (installed as
``netmon.migrations``)."""
