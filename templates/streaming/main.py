"""Flex Template entry point of the streaming pipeline (the image's FLEX_TEMPLATE_PYTHON_PY_FILE).

The launcher runs this file with the template parameters as flags. The pipeline is the installed
package, so this file only starts it, exactly as ``python -m pipelines.streaming`` does.
"""

import sys

from pipelines.launch import configure_logging
from pipelines.streaming import run

if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
