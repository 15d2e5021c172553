"""The WSGI application (gunicorn ``config.wsgi:application``; ``make run`` and the Docker image)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from config.local_state import prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
prepare(settings)  # a server start: the embedded default's folders and local key (none in production)
application = get_wsgi_application()
