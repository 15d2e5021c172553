"""Placeholder views; the dashboard issue replaces them with the real pages."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404

from patients.models import BloodDraw, Patient


@login_required
def patient_list(request):
    names = ", ".join(Patient.objects.for_user(request.user).values_list("study_id", flat=True))
    return HttpResponse(f"Patients: {names}")


@login_required
def patient_detail(request, pk: int):
    patient = get_object_or_404(Patient.objects.for_user(request.user), pk=pk)
    return HttpResponse(str(patient))


@login_required
def draw_detail(request, pk: int):
    draw = get_object_or_404(BloodDraw.objects.for_user(request.user), pk=pk)
    return HttpResponse(str(draw))
