"""Flex Template entry point of the backfill pipeline (the image's FLEX_TEMPLATE_PYTHON_PY_FILE).

The launcher runs this file with the template parameters as flags. The pipeline is the installed
package, so this file only starts it, exactly as ``python -m pipelines.backfill`` does.
"""

import sys

from pipelines.backfill import run
from pipelines.launch import configure_logging

if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
