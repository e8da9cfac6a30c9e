"""The default plugins of flask_execute, installed as ``flask_execute.plugins``.

Each module is an ordinary plugin, registered by the name listed in
:data:`flask_execute.manager.DEFAULT_PLUGINS`; block one by that name with
``CELERY_DISABLED_PLUGINS``.
"""
