from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.patient_list, name="patients"),
    path("patients/<int:pk>/", views.patient_detail, name="patient"),
    path("draws/<int:pk>/", views.draw_detail, name="draw"),
]
urlpatterns.append(path("audit/", __import__("dashboard.audit_views", fromlist=["audit_log"]).audit_log, name="audit"))
