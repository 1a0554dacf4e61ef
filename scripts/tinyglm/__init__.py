"""The tiny GLM checkpoint's recipe, shared by ``train_tiny.py`` and ``eval_tiny.py``: the generated
conversations (``data``), their rendering and tokenizer (``text``), the model (``model``) and the
hand-built copy circuit it starts from (``circuit``)."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSET_DIR = os.path.join(REPO, "glm_plugin", "assets", "tiny-glm")  # where train_tiny.py writes by default
TEMPLATE_PATH = os.path.join(ASSET_DIR, "chat_template.jinja")  # our GLM-4.7 template, rendered in training
