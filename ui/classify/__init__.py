"""Drawing the Classify page: the model picker (``models``), the uploads and the webcam photo with their cached
results (``results``), one image explained (``single``), and a batch gallery (``batch``)."""

from core.explain import predict
from ui.classify.batch import batch, gallery, pick_one, predictions_csv
from ui.classify.models import ModelChoice, load, model_choices, no_model, pick_model
from ui.classify.results import MAX_UPLOAD_MB, RESULTS, Upload, forget_others, source_picker
from ui.classify.single import single, top_chart

__all__ = ["MAX_UPLOAD_MB", "RESULTS", "ModelChoice", "Upload", "batch", "forget_others", "gallery", "load",
           "model_choices", "no_model", "pick_model", "pick_one", "predict", "predictions_csv", "single",
           "source_picker", "top_chart"]  # fmt: skip
