"""The rule for absent components: skip with the reason, fail when CI is set."""

from __future__ import annotations

import pytest

from _components import in_ci, missing


class TestMissing:
    def test_skips_outside_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without CI an absent component skips, naming the component and the reason."""
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="no Widget: not on PATH"):
            missing("Widget", "not on PATH")

    @pytest.mark.parametrize("value", ["true", "1", "yes"])
    def test_fails_in_ci(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        """With CI set the same absence fails the test instead of skipping it."""
        monkeypatch.setenv("CI", value)
        assert in_ci()
        with pytest.raises(pytest.fail.Exception, match=r"no Widget: not on PATH.*CI is set"):
            missing("Widget", "not on PATH")

    @pytest.mark.parametrize("value", ["", "0", "false"])
    def test_ci_off_values(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        """An empty, 0 or false CI counts as not CI."""
        monkeypatch.setenv("CI", value)
        assert not in_ci()
