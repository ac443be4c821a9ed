"""otca: GRPO post-training of flow-matching image and video generators with per-step, per-objective credit."""

import logging as _logging


class _NoTorchvisionFallbackNotice(_logging.Filter):
    """transformers warns once per image-processor class that, without torchvision, it falls back to the PIL
    implementation; diffusers imports two of them, so every command and notebook began with two such notices.
    A CPU install here has no torchvision (PyPI's build does not match the CPU torch), and the PIL fallback is
    what runs either way: only that notice is dropped, every other transformers message stays."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionFallbackNotice())
