"""Shared kernel: settings, database, crypto, blob stores, markers, migrations, Gmail client.

Used by the HTTP API (app/), the worker and the command line; imports neither."""
