"""frozen_record builds the same records as @dataclass(frozen=True), only faster."""
from __future__ import annotations

import dataclasses
import pickle
from typing import Optional

import pytest

from warpload.plan import TensorRecord, frozen_record


@frozen_record
class Fast:
    name: str
    shape: tuple
    stride: Optional[tuple] = None
    flag: bool = False

    def __post_init__(self) -> None:
        if self.flag and self.stride is None:
            raise ValueError("flag needs a stride")


@dataclasses.dataclass(frozen=True)
class Plain:
    name: str
    shape: tuple
    stride: Optional[tuple] = None
    flag: bool = False


@pytest.mark.parametrize("args, kwargs", [(("a", (1, 2)), {}), (("a", (1,), (1,)), {"flag": True}),
                                          ((), {"shape": (3,), "name": "b"})])
def test_records_equal_a_frozen_dataclass_field_for_field(args, kwargs):
    fast, plain = Fast(*args, **kwargs), Plain(*args, **kwargs)
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    assert repr(fast).replace("Fast", "Plain") == repr(plain)
    assert fast == Fast(*args, **kwargs) and hash(fast) == hash(Fast(*args, **kwargs))
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert dataclasses.replace(fast, name="z").name == "z"


def test_records_stay_frozen_and_run_post_init():
    record = Fast("a", (1,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.name = "b"
    with pytest.raises(ValueError, match="flag needs a stride"):
        Fast("a", (1,), flag=True)
    with pytest.raises(TypeError):
        Fast("a")
    with pytest.raises(ValueError, match="only plain 2-D tensors"):
        TensorRecord("w", "F32", (2,), "f", 0, 8, transpose=True)


def test_default_factories_are_refused():
    with pytest.raises(TypeError, match="plain defaults only"):
        @frozen_record
        class WithFactory:
            items: list = dataclasses.field(default_factory=list)
