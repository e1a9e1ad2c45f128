"""The core composite's configuration is validated when it is built."""

import pytest

from tests.support.analyze import CONFIG
from transforms.analyze import AnalyzeEvents


def test_core_rejects_unknown_input_format():
    with pytest.raises(ValueError, match="input_format"):
        AnalyzeEvents(CONFIG, input_format="xml")
