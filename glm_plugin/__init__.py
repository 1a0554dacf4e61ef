"""GLM-4.5/4.6/4.7 serving plugin for vLLM and SGLang."""

__version__ = "0.1.0"
