"""Issue 22: a multi-machine run's ``--rdzv-endpoint HOST:PORT`` needs a port in ASCII digits. ``"²".isdigit()`` is
true, so ``host:²`` once passed the check and reached torchrun, which failed on it with a traceback of its own."""

from __future__ import annotations

import pytest

from core.common.errors import CoreError
from core.train.launch import Nodes


@pytest.mark.parametrize("endpoint", ["node0:²", "node0:١٢٣", "node0:", "node0", "node0:-1", "node0:29 500"])
def test_an_endpoint_without_an_ascii_port_is_refused_in_words(endpoint: str) -> None:
    with pytest.raises(CoreError, match="needs --rdzv-endpoint HOST:PORT"):
        Nodes(count=2, rank=1, endpoint=endpoint).check()


def test_an_endpoint_with_a_port_is_accepted() -> None:
    assert Nodes(count=2, rank=1, endpoint="10.0.0.5:29500").check().endpoint == "10.0.0.5:29500"
