"""Names of the choice sets in the OpenAPI schema (``SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]``).

Several models have a field called ``kind`` or ``status`` with different choices; naming
each set keeps the generated client types readable and the schema free of warnings.
"""

from patients.models import Call, ClinicalEvent, ImagingUpload, SummaryStatus, UploadStatus

CALL = Call.choices
UPLOAD_KIND = ImagingUpload.Kind.choices
CLINICAL_EVENT_KIND = ClinicalEvent.Kind.choices
UPLOAD_STATUS = UploadStatus.choices
SUMMARY_STATUS = SummaryStatus.choices

#: ``ImagingUpload.domain_check["status"]`` (classifier.domain)
DOMAIN_STATUS = [("in_domain", "in_domain"), ("shifted", "shifted")]
