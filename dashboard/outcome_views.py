"""Recording a patient's outcomes on the dashboard (issue 14): progression, death, last follow-up.

The same checks as the API and the admin (``patients.outcomes.check_outcomes``: no future
dates, nothing before the diagnosis, follow-up not before the last draw), who recorded them
and when on the patient; simple-history keeps every change with its author.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from dashboard.access import patient_for
from dashboard.forms import errors_text
from patients.models import Patient
from patients.outcomes import record_outcomes
from patients.roles import Action

_DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


class OutcomeForm(forms.Form):
    progression_date = forms.DateField(required=False, label="Progression", widget=_DATE)
    death_date = forms.DateField(required=False, label="Death", widget=_DATE)
    last_follow_up = forms.DateField(required=False, label="Last follow-up", widget=_DATE)

    @classmethod
    def for_patient(cls, patient: Patient) -> OutcomeForm:
        return cls(initial={k: getattr(patient, k) for k in ("progression_date", "death_date", "last_follow_up")})


@login_required
@require_POST
def patient_outcomes(request: HttpRequest, pk: int) -> HttpResponse:
    patient = patient_for(request, pk, Action.EDIT_RECORDS)
    form = OutcomeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Outcomes not saved: " + errors_text(form))
        return redirect(patient)
    try:
        record_outcomes(patient, request.user, **form.cleaned_data)
    except ValidationError as err:
        patient.refresh_from_db()
        labels = {k: f.label for k, f in form.fields.items()}
        messages.error(request, "Outcomes not saved: " + "; ".join(
            f"{labels.get(k, k)}: {' '.join(v)}" for k, v in err.message_dict.items()))
        return redirect(patient)
    messages.success(request, "Outcomes saved.")
    return redirect(patient)
