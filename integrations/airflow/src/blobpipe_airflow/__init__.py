"""Apache Airflow provider for blobpipe: operators, a sensor, a hook and triggers that run
blobpipe backup pipelines from DAGs (docs/airflow.md in the blobpipe repository)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-blobpipe",
        "name": "blobpipe",
        "description": "Run, wait for, restore and drill blobpipe backup pipelines.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "blobpipe",
                "hook-class-name": "blobpipe_airflow.hooks.blobpipe.BlobpipeHook",
            }
        ],
        "hooks": [
            {
                "integration-name": "blobpipe",
                "python-modules": ["blobpipe_airflow.hooks.blobpipe"],
            }
        ],
        "operators": [
            {
                "integration-name": "blobpipe",
                "python-modules": ["blobpipe_airflow.operators.blobpipe"],
            }
        ],
        "sensors": [
            {
                "integration-name": "blobpipe",
                "python-modules": ["blobpipe_airflow.sensors.blobpipe"],
            }
        ],
        "triggers": [
            {
                "integration-name": "blobpipe",
                "python-modules": ["blobpipe_airflow.triggers.blobpipe"],
            }
        ],
    }
