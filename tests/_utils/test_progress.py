"""Progress sinks: a nested stage's updates carry the outer stage name and share its cancellation."""

import pytest

from normcore._utils.progress import Cancelled, Progress


def test_a_staged_sink_reports_under_its_stage_and_is_cancelled_with_its_parent():
    seen = []
    outer = Progress(callback=lambda stage, done, total, **info: seen.append((stage, done, total, info)))
    inner = outer.as_stage("calibrate")
    inner.update("sample", 1, 4, loss=0.5)
    assert seen == [("calibrate", 1, 4, {"loss": 0.5})]
    outer.cancel()
    with pytest.raises(Cancelled):
        inner.update("sample", 2, 4)
