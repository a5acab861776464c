"""resile._aio: the one module that knows asyncio from trio, and the import rules it stands for."""

from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path

import anyio
import pytest

from resile import _aio

SRC = Path(__file__).resolve().parent.parent / "src" / "resile"
BOUND = 5.0


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class TestImportRules:
    """The source tree keeps the library split and the private names where they belong."""

    def test_only_aio_imports_trio(self) -> None:
        """No module but resile/_aio.py imports trio (or looks it up in sys.modules)."""
        offenders = []
        for path in _modules():
            if path == SRC / "_aio.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Constant) and node.value == "trio":
                    names = ["trio"]
                if any(n == "trio" or n.startswith("trio.") for n in names):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")  # type: ignore[attr-defined]
        assert offenders == []

    def test_no_private_name_from_a_public_module(self) -> None:
        """``from resile.x import _name`` only where x (or _name itself) is an underscore module."""
        modules = {_module_name(p) for p in _modules()}
        offenders = []
        for path in _modules():
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or not node.module:
                    continue
                if not node.module.startswith("resile"):
                    continue
                if node.module.split(".")[-1].startswith("_"):
                    continue  # an underscore module is the home of shared private helpers
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and f"{node.module}.{alias.name}" not in modules:
                        offenders.append(f"{path.relative_to(SRC)}: {node.module}.{alias.name}")
        assert offenders == []


class TestLibrary:
    """What _aio reports and offers under asyncio and trio."""

    def test_no_loop(self) -> None:
        """Outside any event loop: running_library() is None, current_async_library() raises."""
        assert _aio.running_library() is None
        with pytest.raises(RuntimeError, match="no running asyncio or trio"):
            _aio.current_async_library()

    @pytest.mark.anyio
    async def test_names_the_running_library(self, anyio_backend: str) -> None:
        """Inside a loop both report the library that runs (sync code called from it too)."""
        assert _aio.current_async_library() == anyio_backend
        assert _aio.running_library() == anyio_backend

    @pytest.mark.anyio
    async def test_wait_event(self) -> None:
        """wait_event returns False on a timeout and True once the event is set."""
        event = _aio.new_event()
        with anyio.fail_after(BOUND):
            assert await _aio.wait_event(event, 0.01) is False
            assert await _aio.wait_event(event, 0) is False
            event.set()
            assert await _aio.wait_event(event, None) is True

    @pytest.mark.anyio
    async def test_loop_caller_from_another_thread(self) -> None:
        """loop_caller() runs a callable in the loop when called from a worker thread."""
        event = _aio.new_event()
        call = _aio.loop_caller()
        with anyio.fail_after(BOUND):
            await _aio.run_in_thread(lambda: call(event.set))
            assert await _aio.wait_event(event, BOUND)

    @pytest.mark.anyio
    async def test_timeout_fires(self) -> None:
        """A Timeout cancels the block and says so at exit; one that does not fire says no."""
        timeout = _aio.Timeout(0.01)
        await timeout.enter()
        try:
            await _aio.sleep(BOUND)
        except BaseException as exc:  # the library's own cancellation
            fired = await timeout.exit(type(exc), exc, exc.__traceback__)
        else:  # pragma: no cover - the sleep must be cut short
            fired = await timeout.exit(None, None, None)
        assert fired is True
        quiet = _aio.Timeout(BOUND)
        await quiet.enter()
        await _aio.checkpoint()
        assert await quiet.exit(None, None, None) is False

    def test_run_awaitable_without_a_loop(self) -> None:
        """run_awaitable runs a coroutine to its value where no loop runs."""

        async def value() -> int:
            return 7

        assert _aio.run_awaitable(value()) == 7

    def test_run_awaitable_inside_a_loop(self) -> None:
        """Called from sync code inside a running loop, it runs the awaitable in a helper thread."""
        threads: list[int] = []

        async def where() -> str:
            threads.append(threading.get_ident())
            raise KeyError("inner")

        async def main() -> None:
            with pytest.raises(KeyError, match="inner"):
                _aio.run_awaitable(where())

        asyncio.run(main())
        assert threads and threads[0] != threading.get_ident()
