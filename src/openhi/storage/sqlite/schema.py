"""SQLite schema migrations for the metadata index, applied in order at start-up."""

from __future__ import annotations

# Each entry is applied once, in order; the applied count is kept in PRAGMA user_version.
# Never edit an applied migration: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE datastores (
        id TEXT PRIMARY KEY,
        name TEXT,
        status TEXT NOT NULL,
        lossless_storage_format TEXT NOT NULL,
        kms_key_arn TEXT,
        lambda_authorizer_arn TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        client_token TEXT,
        request_hash TEXT
    );
    CREATE UNIQUE INDEX datastores_token ON datastores (client_token) WHERE client_token IS NOT NULL;
    CREATE INDEX datastores_page ON datastores (created_at, id);
    CREATE INDEX datastores_status_page ON datastores (status, created_at, id);

    CREATE TABLE tags (
        resource_arn TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource_arn, key)
    );

    CREATE TABLE import_jobs (
        id TEXT PRIMARY KEY,
        datastore_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        data_access_role_arn TEXT NOT NULL,
        input_s3_uri TEXT NOT NULL,
        output_s3_uri TEXT NOT NULL,
        input_owner_account_id TEXT,
        import_configuration TEXT,
        message TEXT,
        submitted_at REAL NOT NULL,
        ended_at REAL,
        client_token TEXT,
        request_hash TEXT
    );
    CREATE UNIQUE INDEX import_jobs_token ON import_jobs (datastore_id, client_token)
        WHERE client_token IS NOT NULL;
    CREATE INDEX import_jobs_page ON import_jobs (datastore_id, submitted_at, id);
    CREATE INDEX import_jobs_status_page ON import_jobs (datastore_id, status, submitted_at, id);

    CREATE TABLE image_sets (
        id TEXT PRIMARY KEY,
        datastore_id TEXT NOT NULL,
        latest_version INTEGER NOT NULL,
        content_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        workflow_status TEXT NOT NULL,
        is_primary INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deleted_at REAL,
        last_accessed_at REAL,
        storage_tier TEXT NOT NULL DEFAULT 'FREQUENT_ACCESS',
        patient_id TEXT,
        patient_name TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        study_uid TEXT,
        study_id TEXT,
        study_description TEXT,
        accession_number TEXT,
        series_uid TEXT,
        modality TEXT,
        body_part TEXT,
        series_number INTEGER,
        study_date TEXT,
        study_time TEXT,
        study_datetime TEXT,
        num_series INTEGER,
        num_instances INTEGER
    );
    -- search: every filter and every sort is served by an index (live sets only)
    CREATE INDEX image_sets_updated ON image_sets (datastore_id, updated_at, id) WHERE state != 'DELETED';
    CREATE INDEX image_sets_created ON image_sets (datastore_id, created_at, id) WHERE state != 'DELETED';
    CREATE INDEX image_sets_studydt ON image_sets (datastore_id, study_datetime, id) WHERE state != 'DELETED';
    CREATE INDEX image_sets_patient ON image_sets (datastore_id, patient_id, updated_at, id);
    CREATE INDEX image_sets_accession ON image_sets (datastore_id, accession_number, updated_at, id);
    CREATE INDEX image_sets_study_id ON image_sets (datastore_id, study_id, updated_at, id);
    CREATE INDEX image_sets_study_uid ON image_sets (datastore_id, study_uid, updated_at, id);
    CREATE INDEX image_sets_series_uid ON image_sets (datastore_id, series_uid, updated_at, id);
    CREATE INDEX image_sets_primary ON image_sets (datastore_id, is_primary, updated_at, id);
    CREATE INDEX image_sets_primary_series ON image_sets (datastore_id, study_uid, series_uid)
        WHERE is_primary = 1 AND state != 'DELETED';
    CREATE INDEX image_sets_locked ON image_sets (state) WHERE state = 'LOCKED';

    CREATE TABLE image_set_versions (
        image_set_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        datastore_id TEXT NOT NULL,
        state TEXT NOT NULL,
        workflow_status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deleted_at REAL,
        message TEXT,
        forced INTEGER NOT NULL DEFAULT 0,
        is_primary INTEGER NOT NULL,
        metadata_key TEXT,
        PRIMARY KEY (image_set_id, version)
    );
    CREATE INDEX image_set_versions_locked ON image_set_versions (state) WHERE state = 'LOCKED';

    CREATE TABLE image_set_frames (
        image_set_id TEXT NOT NULL,
        frame_id TEXT NOT NULL,
        blob_key TEXT NOT NULL,
        stored_ts TEXT NOT NULL,
        PRIMARY KEY (image_set_id, frame_id)
    );
    CREATE INDEX image_set_frames_blob ON image_set_frames (blob_key);

    CREATE TABLE blob_gc (
        blob_key TEXT PRIMARY KEY,
        enqueued_at REAL NOT NULL
    );
    """,
    # 2: blob collection asks whether a metadata blob is still referenced by a version
    """
    CREATE INDEX image_set_versions_metadata ON image_set_versions (metadata_key);
    """,
    # 3: import-job leases (any number of workers claim jobs) and at most one live primary set per series
    """
    ALTER TABLE import_jobs ADD COLUMN lease_owner TEXT;
    ALTER TABLE import_jobs ADD COLUMN lease_expires REAL;
    CREATE INDEX import_jobs_claim ON import_jobs (submitted_at, id)
        WHERE status IN ('SUBMITTED', 'IN_PROGRESS');
    CREATE UNIQUE INDEX image_sets_one_primary ON image_sets (datastore_id, study_uid, series_uid)
        WHERE is_primary = 1 AND state != 'DELETED';
    """,
    # 4: write owners: every API process beats a heartbeat; each LOCKED version (and copy-source head)
    # names the process finishing it, so recovery fails only the writes of dead processes
    """
    CREATE TABLE write_owners (
        owner TEXT PRIMARY KEY,
        heartbeat REAL NOT NULL,
        stale_at REAL NOT NULL
    );
    CREATE TABLE write_locks (
        image_set_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        owner TEXT NOT NULL,
        locked_at REAL NOT NULL,
        PRIMARY KEY (image_set_id, version, owner)
    );
    CREATE INDEX write_locks_owner ON write_locks (owner);
    """,
    # 5: a range on one timestamp sorted by the other is read from one index (range, then sort key)
    """
    CREATE INDEX image_sets_created_updated ON image_sets (datastore_id, created_at, updated_at, id)
        WHERE state != 'DELETED';
    CREATE INDEX image_sets_updated_created ON image_sets (datastore_id, updated_at, created_at, id)
        WHERE state != 'DELETED';
    """,
    # 6: a range on one time column sorted by another is read bucket by bucket (storage/sqlite/search.py,
    # build_bucket_sql): a day and a block (16 days) per time column, and one index per bucket and sort
    # column. Epoch days are truncated (created_at / 86400); study days map YYYYMMDD to
    # YYYY * 448 + min(MM, 13) * 32 + min(DD, 31) (-1: a date not starting with 8 digits). The buckets are
    # index expressions (search.SQLITE_BUCKETS spells them the same), not generated columns: SQLite reads a
    # query naming a virtual column from the table, never from the index alone. The trailing columns let
    # the index alone check the exact bounds, isPrimary and the state.
    """
    CREATE INDEX image_sets_created_day_updated ON image_sets (datastore_id,
        CAST(created_at / 86400.0 AS INTEGER),
        updated_at, id, created_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_created_block_updated ON image_sets (datastore_id,
        CAST(created_at / 86400.0 AS INTEGER) / 16,
        updated_at, id, created_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_created_day_studydt ON image_sets (datastore_id,
        CAST(created_at / 86400.0 AS INTEGER),
        study_datetime, id, created_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_created_block_studydt ON image_sets (datastore_id,
        CAST(created_at / 86400.0 AS INTEGER) / 16,
        study_datetime, id, created_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_updated_day_created ON image_sets (datastore_id,
        CAST(updated_at / 86400.0 AS INTEGER),
        created_at, id, updated_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_updated_block_created ON image_sets (datastore_id,
        CAST(updated_at / 86400.0 AS INTEGER) / 16,
        created_at, id, updated_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_updated_day_studydt ON image_sets (datastore_id,
        CAST(updated_at / 86400.0 AS INTEGER),
        study_datetime, id, updated_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_updated_block_studydt ON image_sets (datastore_id,
        CAST(updated_at / 86400.0 AS INTEGER) / 16,
        study_datetime, id, updated_at, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_studydt_day_created ON image_sets (datastore_id,
        (CASE WHEN study_datetime IS NULL THEN NULL
            WHEN study_datetime GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
            THEN CAST(substr(study_datetime, 1, 4) AS INTEGER) * 448
            + min(CAST(substr(study_datetime, 5, 2) AS INTEGER), 13) * 32
            + min(CAST(substr(study_datetime, 7, 2) AS INTEGER), 31) ELSE -1 END),
        created_at, id, study_datetime, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_studydt_block_created ON image_sets (datastore_id,
        (CASE WHEN study_datetime IS NULL THEN NULL
            WHEN study_datetime GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
            THEN (CAST(substr(study_datetime, 1, 4) AS INTEGER) * 448
            + min(CAST(substr(study_datetime, 5, 2) AS INTEGER), 13) * 32
            + min(CAST(substr(study_datetime, 7, 2) AS INTEGER), 31)) / 16 ELSE -1 END),
        created_at, id, study_datetime, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_studydt_day_updated ON image_sets (datastore_id,
        (CASE WHEN study_datetime IS NULL THEN NULL
            WHEN study_datetime GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
            THEN CAST(substr(study_datetime, 1, 4) AS INTEGER) * 448
            + min(CAST(substr(study_datetime, 5, 2) AS INTEGER), 13) * 32
            + min(CAST(substr(study_datetime, 7, 2) AS INTEGER), 31) ELSE -1 END),
        updated_at, id, study_datetime, is_primary, state) WHERE state != 'DELETED';
    CREATE INDEX image_sets_studydt_block_updated ON image_sets (datastore_id,
        (CASE WHEN study_datetime IS NULL THEN NULL
            WHEN study_datetime GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*'
            THEN (CAST(substr(study_datetime, 1, 4) AS INTEGER) * 448
            + min(CAST(substr(study_datetime, 5, 2) AS INTEGER), 13) * 32
            + min(CAST(substr(study_datetime, 7, 2) AS INTEGER), 31)) / 16 ELSE -1 END),
        updated_at, id, study_datetime, is_primary, state) WHERE state != 'DELETED';
    """,
    # 7: the DICOM study / series / instance index (QIDO-RS, WADO-RS, C-FIND; storage/dicom_index_sql.py),
    # written in the transaction of every image-set write that changes it. dicom_series: one row per image set
    # with content (live = primary and not DELETED; a DELETED set's rows are removed); dicom_instances: its
    # instances; dicom_studies: recomputed from the study's live series (a study without one has no row).
    # Study-level matches are served by one index each within the datastore.
    """
    CREATE TABLE dicom_studies (
        datastore_id TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        study_date TEXT,
        study_time TEXT,
        accession_number TEXT,
        referring_physician_name TEXT,
        study_description TEXT,
        patient_name TEXT,
        patient_id TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        study_id TEXT,
        modalities TEXT,
        num_series INTEGER NOT NULL,
        num_instances INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (datastore_id, study_uid)
    );
    CREATE INDEX dicom_studies_updated ON dicom_studies (datastore_id, updated_at DESC, study_uid);
    CREATE INDEX dicom_studies_patient_id ON dicom_studies (datastore_id, patient_id);
    CREATE INDEX dicom_studies_patient_name ON dicom_studies (datastore_id, patient_name);
    CREATE INDEX dicom_studies_accession ON dicom_studies (datastore_id, accession_number);
    CREATE INDEX dicom_studies_date ON dicom_studies (datastore_id, study_date);
    CREATE INDEX dicom_studies_study_id ON dicom_studies (datastore_id, study_id);

    CREATE TABLE dicom_series (
        image_set_id TEXT PRIMARY KEY,
        datastore_id TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        live INTEGER NOT NULL,
        study_date TEXT,
        study_time TEXT,
        accession_number TEXT,
        referring_physician_name TEXT,
        study_description TEXT,
        patient_name TEXT,
        patient_id TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        study_id TEXT,
        modality TEXT,
        series_description TEXT,
        body_part TEXT,
        series_number INTEGER,
        series_date TEXT,
        series_time TEXT,
        pps_start_date TEXT,
        pps_start_time TEXT,
        num_instances INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX dicom_series_study ON dicom_series (datastore_id, study_uid, series_uid) WHERE live = 1;
    CREATE INDEX dicom_series_uid ON dicom_series (datastore_id, series_uid) WHERE live = 1;

    CREATE TABLE dicom_instances (
        image_set_id TEXT NOT NULL,
        sop_uid TEXT NOT NULL,
        datastore_id TEXT NOT NULL,
        study_uid TEXT NOT NULL,
        series_uid TEXT NOT NULL,
        sop_class_uid TEXT,
        instance_number INTEGER,
        rows INTEGER,
        columns INTEGER,
        bits_allocated INTEGER,
        number_of_frames INTEGER,
        frame_ids TEXT NOT NULL,
        stored_ts TEXT,
        PRIMARY KEY (image_set_id, sop_uid)
    );
    CREATE INDEX dicom_instances_sop ON dicom_instances (datastore_id, sop_uid);
    """,
    # 8: the event outbox (storage/events_sql.py): one row per state change, written in the change's
    # transaction; seq is max + 1 under the one writer (gap-free, commit order). Webhook cursors and leases.
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        detail_type TEXT NOT NULL,
        datastore_id TEXT NOT NULL,
        image_set_id TEXT,
        detail TEXT NOT NULL
    );
    CREATE TABLE webhook_cursors (
        name TEXT PRIMARY KEY,
        delivered_seq INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        lease_owner TEXT,
        lease_expires REAL
    );
    """,
]
