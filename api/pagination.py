"""List pagination: ``{"count", "next", "previous", "results"}`` with a client-chosen page size."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    #: Large enough that a client can read a draw's events in a few pages.
    max_page_size = 1000
