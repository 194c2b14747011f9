"""Service settings: identity used in ARNs and the quotas, with the real service's defaults."""

from __future__ import annotations

from dataclasses import dataclass

GB = 1024**3


@dataclass(frozen=True)
class Settings:
    region: str = "us-east-1"
    account_id: str = "123456789012"
    max_active_datastores: int = 100
    max_files_per_job: int = 5000
    max_file_bytes: int = 10 * GB
    max_job_bytes: int = 10 * GB
    max_concurrent_jobs_per_datastore: int = 100
    max_update_payload_bytes: int = 10 * 1024
    max_frames_per_copy: int = 1000
    archive_after_seconds: float = 30 * 24 * 3600
    datastore_transition_seconds: float = 0.05
    # an import job's lease: a worker renews it every third of this; a job whose worker died is taken
    # over by another worker once it expires
    job_lease_seconds: float = 30.0
    # an API process beats a heartbeat this often; the writes it was finishing are recovered by another
    # API process once it missed three beats (it died)
    write_heartbeat_seconds: float = 2.0
    # events older than this are removed from the feed (0: kept for ever), unless a configured webhook has
    # not delivered them yet
    event_retention_seconds: float = 0.0


def settings_from_env(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Settings with each field overridable by ``OPENHI_<FIELD>`` (e.g. ``OPENHI_MAX_ACTIVE_DATASTORES``)."""
    import dataclasses
    import os

    env = dict(os.environ) if environ is None else environ
    values: dict[str, object] = {}
    for f in dataclasses.fields(Settings):
        raw = env.get(f"OPENHI_{f.name.upper()}")
        if raw is not None:
            values[f.name] = raw if f.type in ("str", str) else (float(raw) if "." in raw else int(raw))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
