"""Backbone export (dev time). Installed inside the wheel as ``pypatch._export`` (see
pyproject.toml) so that ``pypatch export`` and first-use export work from an installed package;
loaded only by ``pypatch.models`` when exporting, never on the search path."""
