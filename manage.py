#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    # Local by default (make run, developers); deployments name config.settings.production.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from config.local_state import prepare

    prepare(settings)  # the folders and local key the settings point at (importing them creates none)
    execute_from_command_line(sys.argv)
