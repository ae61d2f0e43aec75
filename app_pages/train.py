"""Train (planned): configure and start background training runs."""

from ui.common import placeholder

placeholder("Train", "issue 5", [
    "ResNet-18/34/50/101/152, MobileNetV2 and a small CNN; pretrained or from scratch, frozen or fine-tuned.",
    "SGD, Adam, AdamW, Adadelta, RMSprop; step, cosine and one-cycle schedules; augmentation; oversampling.",
    "Runs train in the background: keep using the app, start several, cancel or resume them.",
])  # fmt: skip
