"""The dashboard's pages, one module per page (issue 12, point 8); ``dashboard/urls.py`` names
the views through this package.

- ``patients``: the patient list, the patient page (timeline), a new draw, the printable summary,
  the patient's CSV;
- ``draws``: the draw page (result, cell gallery, embedding);
- ``uploads``: the upload form's endpoints (create, status polled by the progress bar, withdraw);
- ``cohorts``: the cohort page and its CSV;
- ``models``: the Models page (versions, their evaluations; promote and retire through
  ``patients.registry``);
- ``assets``: plotly.js served from the installed package;
- ``common``: the page chrome every page renders with (``base_context``) and the CSV response.

The review, audit, outcome and survival pages keep their own modules beside this package
(``dashboard/review_views.py`` ...).

Every view requires a signed-in user, reads through ``for_user`` (out of scope is a 404),
checks actions with ``dashboard.access.require`` (a forbidden action on a visible object is a
403) and records the read with ``patients.audit.record``.
"""

from dashboard.views.assets import plotly_js
from dashboard.views.cohorts import cohort, cohort_export
from dashboard.views.common import base_context
from dashboard.views.draws import draw_detail
from dashboard.views.models import model_action, models_page
from dashboard.views.patients import draw_create, patient_detail, patient_export, patient_list, patient_print
from dashboard.views.uploads import upload_create, upload_status, upload_withdraw

__all__ = [
    "base_context",
    "cohort",
    "cohort_export",
    "draw_create",
    "draw_detail",
    "model_action",
    "models_page",
    "patient_detail",
    "patient_export",
    "patient_list",
    "patient_print",
    "plotly_js",
    "upload_create",
    "upload_status",
    "upload_withdraw",
]
