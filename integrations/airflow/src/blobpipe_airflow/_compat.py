"""The few Airflow names that moved between 2.10 and 3.x, imported from where they live."""

from __future__ import annotations

try:  # Airflow 3: the task SDK
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator, PokeReturnValue
except ImportError:  # Airflow 2.10
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models import BaseOperator  # type: ignore[no-redef,attr-defined]
    from airflow.sensors.base import (  # type: ignore[no-redef,attr-defined]
        BaseSensorOperator,
        PokeReturnValue,
    )

from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = [
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "PokeReturnValue",
    "TriggerEvent",
]
