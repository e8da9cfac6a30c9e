"""The default plugins of flask_execute, installed as ``flask_execute.plugins``.

Each module is an ordinary plugin, registered by the name listed in
:data:`flask_execute.manager.DEFAULT_PLUGINS`; block one by that name with
``CELERY_DISABLED_PLUGINS``.
"""

if __name__ != "flask_execute.plugins":
    # An editable install puts the checkout on sys.path; a second copy of every plugin
    # under another name would register its hooks twice.
    raise ImportError(f"import flask_execute.plugins, not {__name__!r}: plugins/ is its folder")
