"""The package registers as an Airflow provider (entry point + get_provider_info)."""

from __future__ import annotations

from airflow.providers_manager import ProvidersManager

import blobpipe_airflow


def test_provider_is_registered_with_its_connection_type() -> None:
    pm = ProvidersManager()
    assert "airflow-provider-blobpipe" in pm.providers
    assert pm.providers["airflow-provider-blobpipe"].version == blobpipe_airflow.__version__
    hook = pm.hooks["blobpipe"]
    assert hook is not None
    assert hook.hook_class_name == "blobpipe_airflow.hooks.blobpipe.BlobpipeHook"
    assert hook.connection_id_attribute_name == "blobpipe_conn_id"
