"""The one name that drives the plugin system.

``NAME`` names the pluggy markers, every plugin manager and the entry-point group
third-party plugins register under.
"""

from __future__ import annotations

import pluggy

#: Project name for pluggy markers, plugin managers and the entry-point group.
NAME = "flask_execute"

#: Marker for hook specifications (used by :mod:`flask_execute.hookspecs`).
hookspec = pluggy.HookspecMarker(NAME)

#: Marker for hook implementations, the decorator plugin authors use.
hookimpl = pluggy.HookimplMarker(NAME)
