"""llmboost: make small, cheap recommenders better with what large language models know.

The core (``data``, ``splitting``, ``evaluation``, ``models``, ``llm``) is shared; each published
method lives in its own subpackage.
"""

__version__ = "0.1.0"
