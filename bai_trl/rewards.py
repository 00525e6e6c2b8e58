"""Reward-function wrappers that hand each generation round's raw samples to a BaiCallback."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["ObservedReward", "AsyncObservedReward", "RoundCollector", "callable_name", "observe"]

# (completion_ids, {reward index: outputs}, the reward kwargs TRL passed) -> None
RoundHandler = Callable[[Any, dict[int, list], dict[str, Any]], None]


def callable_name(func: Any) -> str:
    """The name TRL 1.16 logs a reward function under (`rewards/<name>/mean`)."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


class RoundCollector:
    """Groups the outputs of the wrapped functions of one TRL reward call (one generation
    round: every function gets the same `completion_ids` list) and hands the round on once
    all of them have returned."""

    def __init__(self, on_round: RoundHandler, guard: Callable[[str, BaseException], None]):
        self.on_round = on_round
        self.guard = guard
        self.expected: set[int] = set()
        self._key: int | None = None
        self._outputs: dict[int, list] = {}

    def observe(self, index: int, kwargs: dict[str, Any], outputs: Any) -> None:
        """Record function `index`'s outputs; never raises."""
        try:
            ids = kwargs.get("completion_ids")
            if ids is None:
                return
            if id(ids) != self._key:
                self._key, self._outputs = id(ids), {}
            self._outputs[index] = list(outputs)
            if self.expected and self.expected <= set(self._outputs):
                outputs_by_index, self._key, self._outputs = self._outputs, None, {}
                self.on_round(ids, outputs_by_index, kwargs)
        except Exception as exc:  # never break a reward call
            self.guard("sample capture", exc)


class ObservedReward:
    """A TRL reward function unchanged (same name, arguments and outputs) that also reports
    its outputs and the round's completion ids to a RoundCollector."""

    def __init__(self, func: Callable[..., Any], index: int, collector: RoundCollector) -> None:
        functools.update_wrapper(self, func)
        self.__name__ = callable_name(func)
        self.func = func
        self.index = index
        self.collector = collector

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.func(*args, **kwargs)
        self.collector.observe(self.index, kwargs, outputs)
        return outputs

    def __repr__(self) -> str:
        return f"ObservedReward({self.func!r})"


class AsyncObservedReward(ObservedReward):
    """The async form: TRL awaits an async reward function (its `__call__` is a coroutine)."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        outputs = await self.func(*args, **kwargs)
        self.collector.observe(self.index, kwargs, outputs)
        return outputs


def _is_async(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        type(func).__call__)


def observe(func: Any, index: int, collector: RoundCollector) -> Any | None:
    """The wrapper of one reward function, or None for what only TRL can call (a reward
    model or its hub id: TRL runs those itself, so their outputs are not visible)."""
    if isinstance(func, str) or not callable(func) or _is_module(func):
        return None
    cls = AsyncObservedReward if _is_async(func) else ObservedReward
    return cls(func, index, collector)


def _is_module(func: Any) -> bool:
    try:
        import torch.nn

        return isinstance(func, torch.nn.Module)
    except ImportError:  # pragma: no cover - torch is a TRL dependency
        return False
