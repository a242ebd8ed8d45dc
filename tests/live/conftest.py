"""Fixtures of the live scenarios."""

import pytest

from ..support.live import checkout_untouched


@pytest.fixture(scope="module")
def checkout_left_as_it_was():
    """The module's documented examples leave the clone as it was (they run in a scratch
    folder): ``pytestmark = pytest.mark.usefixtures("checkout_left_as_it_was")``."""
    with checkout_untouched():
        yield
