"""PostgreSQL schema migrations for the metadata index, applied in order at start-up."""

from __future__ import annotations

# Key of the transaction-scoped advisory lock that serialises migrations across processes.
MIGRATION_LOCK_KEY = 0x6F70656E6869  # "openhi"

# Each entry is applied once, in order, in one transaction; applied versions are rows of
# schema_migrations. Never edit an applied migration: append a new one.
#
# Types mirror the SQLite schema so that rows map to the same Python values: epoch seconds are
# DOUBLE PRECISION (float), flags SMALLINT 0/1 (read back through bool()), counts INTEGER. Text
# columns use the "C" collation so that ids and search keys sort byte-wise, exactly like SQLite.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE datastores (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT,
        status TEXT COLLATE "C" NOT NULL,
        lossless_storage_format TEXT NOT NULL,
        kms_key_arn TEXT,
        lambda_authorizer_arn TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        client_token TEXT COLLATE "C",
        request_hash TEXT
    );
    CREATE UNIQUE INDEX datastores_token ON datastores (client_token) WHERE client_token IS NOT NULL;
    CREATE INDEX datastores_page ON datastores (created_at, id);
    CREATE INDEX datastores_status_page ON datastores (status, created_at, id);

    CREATE TABLE tags (
        resource_arn TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource_arn, key)
    );

    CREATE TABLE import_jobs (
        id TEXT COLLATE "C" PRIMARY KEY,
        datastore_id TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        status TEXT COLLATE "C" NOT NULL,
        data_access_role_arn TEXT NOT NULL,
        input_s3_uri TEXT NOT NULL,
        output_s3_uri TEXT NOT NULL,
        input_owner_account_id TEXT,
        import_configuration TEXT,
        message TEXT,
        submitted_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        client_token TEXT COLLATE "C",
        request_hash TEXT
    );
    CREATE UNIQUE INDEX import_jobs_token ON import_jobs (datastore_id, client_token)
        WHERE client_token IS NOT NULL;
    CREATE INDEX import_jobs_page ON import_jobs (datastore_id, submitted_at, id);
    CREATE INDEX import_jobs_status_page ON import_jobs (datastore_id, status, submitted_at, id);
    CREATE INDEX import_jobs_status ON import_jobs (status, submitted_at);

    CREATE TABLE image_sets (
        id TEXT COLLATE "C" PRIMARY KEY,
        datastore_id TEXT COLLATE "C" NOT NULL,
        latest_version INTEGER NOT NULL,
        content_version INTEGER NOT NULL,
        state TEXT COLLATE "C" NOT NULL,
        workflow_status TEXT NOT NULL,
        is_primary SMALLINT NOT NULL CHECK (is_primary IN (0, 1)),
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        deleted_at DOUBLE PRECISION,
        last_accessed_at DOUBLE PRECISION,
        storage_tier TEXT COLLATE "C" NOT NULL DEFAULT 'FREQUENT_ACCESS',
        patient_id TEXT COLLATE "C",
        patient_name TEXT,
        patient_birth_date TEXT,
        patient_sex TEXT,
        study_uid TEXT COLLATE "C",
        study_id TEXT COLLATE "C",
        study_description TEXT,
        accession_number TEXT COLLATE "C",
        series_uid TEXT COLLATE "C",
        modality TEXT,
        body_part TEXT,
        series_number INTEGER,
        study_date TEXT,
        study_time TEXT,
        study_datetime TEXT COLLATE "C",
        num_series INTEGER,
        num_instances INTEGER
    );
    -- search: every filter and every sort is served by an index (live sets only)
    CREATE INDEX image_sets_updated ON image_sets (datastore_id, updated_at, id) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_created ON image_sets (datastore_id, created_at, id) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_studydt ON image_sets (datastore_id, study_datetime, id) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_no_studydt ON image_sets (datastore_id, id)
        WHERE study_datetime IS NULL AND state <> 'DELETED';
    CREATE INDEX image_sets_patient ON image_sets (datastore_id, patient_id, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_accession ON image_sets (datastore_id, accession_number, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_study_id ON image_sets (datastore_id, study_id, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_study_uid ON image_sets (datastore_id, study_uid, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_series_uid ON image_sets (datastore_id, series_uid, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_primary ON image_sets (datastore_id, is_primary, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_primary_series ON image_sets (datastore_id, study_uid, series_uid)
        WHERE is_primary = 1 AND state <> 'DELETED';
    CREATE INDEX image_sets_locked ON image_sets (state) WHERE state = 'LOCKED';
    CREATE INDEX image_sets_idle ON image_sets ((coalesce(last_accessed_at, created_at)))
        WHERE storage_tier = 'FREQUENT_ACCESS' AND state <> 'DELETED';

    CREATE TABLE image_set_versions (
        image_set_id TEXT COLLATE "C" NOT NULL,
        version INTEGER NOT NULL,
        datastore_id TEXT COLLATE "C" NOT NULL,
        state TEXT COLLATE "C" NOT NULL,
        workflow_status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        deleted_at DOUBLE PRECISION,
        message TEXT,
        forced SMALLINT NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
        is_primary SMALLINT NOT NULL CHECK (is_primary IN (0, 1)),
        metadata_key TEXT COLLATE "C",
        PRIMARY KEY (image_set_id, version)
    );
    CREATE INDEX image_set_versions_locked ON image_set_versions (state) WHERE state = 'LOCKED';
    CREATE INDEX image_set_versions_metadata ON image_set_versions (metadata_key);

    CREATE TABLE image_set_frames (
        image_set_id TEXT COLLATE "C" NOT NULL,
        frame_id TEXT COLLATE "C" NOT NULL,
        blob_key TEXT COLLATE "C" NOT NULL,
        stored_ts TEXT NOT NULL,
        PRIMARY KEY (image_set_id, frame_id)
    );
    CREATE INDEX image_set_frames_blob ON image_set_frames (blob_key);

    CREATE TABLE blob_gc (
        blob_key TEXT COLLATE "C" PRIMARY KEY,
        enqueued_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX blob_gc_enqueued ON blob_gc (enqueued_at);
    """,
    # 2: import-job leases (workers claim jobs with FOR UPDATE SKIP LOCKED) and at most one live
    # primary set per series (two workers importing the same new series: one creates it, the other retries)
    """
    ALTER TABLE import_jobs ADD COLUMN lease_owner TEXT;
    ALTER TABLE import_jobs ADD COLUMN lease_expires DOUBLE PRECISION;
    CREATE INDEX import_jobs_claim ON import_jobs (submitted_at, id)
        WHERE status IN ('SUBMITTED', 'IN_PROGRESS');
    CREATE UNIQUE INDEX image_sets_one_primary ON image_sets (datastore_id, study_uid, series_uid)
        WHERE is_primary = 1 AND state <> 'DELETED';
    """,
    # 3: write owners: every API process beats a heartbeat; each LOCKED version (and copy-source head)
    # names the process finishing it, so recovery fails only the writes of dead processes
    """
    CREATE TABLE write_owners (
        owner TEXT COLLATE "C" PRIMARY KEY,
        heartbeat DOUBLE PRECISION NOT NULL,
        stale_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE write_locks (
        image_set_id TEXT COLLATE "C" NOT NULL,
        version INTEGER NOT NULL,
        owner TEXT COLLATE "C" NOT NULL,
        locked_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (image_set_id, version, owner)
    );
    CREATE INDEX write_locks_owner ON write_locks (owner);
    """,
    # 4: a range on one timestamp sorted by the other is read from one index (range, then sort key)
    """
    CREATE INDEX image_sets_created_updated ON image_sets (datastore_id, created_at, updated_at, id)
        WHERE state <> 'DELETED';
    CREATE INDEX image_sets_updated_created ON image_sets (datastore_id, updated_at, created_at, id)
        WHERE state <> 'DELETED';
    """,
    # 5: a range on one time column sorted by another is read bucket by bucket (storage/sqlite/search.py,
    # build_bucket_sql): a day and a block (16 days) per time column, generated from the column, and one
    # index per bucket and sort column. Epoch days are truncated (created_at / 86400); study days map
    # YYYYMMDD to YYYY * 448 + min(MM, 13) * 32 + min(DD, 31) (-1: a date not starting with 8 digits;
    # NULL without a date). The trailing columns let the index alone check the exact bounds and isPrimary.
    # Adding stored columns rewrites image_sets once (about 30 s per million image sets).
    """
    ALTER TABLE image_sets
        ADD COLUMN created_day INTEGER GENERATED ALWAYS AS (trunc(created_at / 86400)::integer) STORED,
        ADD COLUMN created_block INTEGER GENERATED ALWAYS AS (trunc(created_at / 86400)::integer / 16) STORED,
        ADD COLUMN updated_day INTEGER GENERATED ALWAYS AS (trunc(updated_at / 86400)::integer) STORED,
        ADD COLUMN updated_block INTEGER GENERATED ALWAYS AS (trunc(updated_at / 86400)::integer / 16) STORED,
        ADD COLUMN study_day INTEGER GENERATED ALWAYS AS (
            CASE WHEN study_datetime IS NULL THEN NULL WHEN study_datetime ~ '^[0-9]{8}'
            THEN substr(study_datetime, 1, 4)::integer * 448 + least(substr(study_datetime, 5, 2)::integer, 13) * 32
            + least(substr(study_datetime, 7, 2)::integer, 31) ELSE -1 END) STORED,
        ADD COLUMN study_block INTEGER GENERATED ALWAYS AS (
            CASE WHEN study_datetime IS NULL THEN NULL WHEN study_datetime ~ '^[0-9]{8}'
            THEN (substr(study_datetime, 1, 4)::integer * 448 + least(substr(study_datetime, 5, 2)::integer, 13) * 32
            + least(substr(study_datetime, 7, 2)::integer, 31)) / 16 ELSE -1 END) STORED;
    CREATE INDEX image_sets_created_day_updated ON image_sets
        (datastore_id, created_day, updated_at, id, created_at, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_created_block_updated ON image_sets
        (datastore_id, created_block, updated_at, id, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_created_day_studydt ON image_sets
        (datastore_id, created_day, study_datetime, id, created_at, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_created_block_studydt ON image_sets
        (datastore_id, created_block, study_datetime, id, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_updated_day_created ON image_sets
        (datastore_id, updated_day, created_at, id, updated_at, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_updated_block_created ON image_sets
        (datastore_id, updated_block, created_at, id, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_updated_day_studydt ON image_sets
        (datastore_id, updated_day, study_datetime, id, updated_at, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_updated_block_studydt ON image_sets
        (datastore_id, updated_block, study_datetime, id, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_studydt_day_created ON image_sets
        (datastore_id, study_day, created_at, id, study_datetime, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_studydt_block_created ON image_sets
        (datastore_id, study_block, created_at, id, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_studydt_day_updated ON image_sets
        (datastore_id, study_day, updated_at, id, study_datetime, is_primary) WHERE state <> 'DELETED';
    CREATE INDEX image_sets_studydt_block_updated ON image_sets
        (datastore_id, study_block, updated_at, id, is_primary) WHERE state <> 'DELETED';
    """,
    # 6: the DICOM study / series / instance index (QIDO-RS, WADO-RS, C-FIND; storage/dicom_index_sql.py),
    # written in the transaction of every image-set write that changes it. dicom_series: one row per image set
    # with content (live = primary and not DELETED; a DELETED set's rows are removed); dicom_instances: its
    # instances; dicom_studies: recomputed from the study's live series (a study without one has no row).
    # Study-level matches are served by one index each within the datastore.
    """
    CREATE TABLE dicom_studies (
        datastore_id TEXT COLLATE "C" NOT NULL,
        study_uid TEXT COLLATE "C" NOT NULL,
        study_date TEXT COLLATE "C",
        study_time TEXT COLLATE "C",
        accession_number TEXT COLLATE "C",
        referring_physician_name TEXT COLLATE "C",
        study_description TEXT COLLATE "C",
        patient_name TEXT COLLATE "C",
        patient_id TEXT COLLATE "C",
        patient_birth_date TEXT COLLATE "C",
        patient_sex TEXT COLLATE "C",
        study_id TEXT COLLATE "C",
        modalities TEXT COLLATE "C",
        num_series INTEGER NOT NULL,
        num_instances INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (datastore_id, study_uid)
    );
    CREATE INDEX dicom_studies_updated ON dicom_studies (datastore_id, updated_at DESC, study_uid);
    CREATE INDEX dicom_studies_patient_id ON dicom_studies (datastore_id, patient_id);
    CREATE INDEX dicom_studies_patient_name ON dicom_studies (datastore_id, patient_name);
    CREATE INDEX dicom_studies_accession ON dicom_studies (datastore_id, accession_number);
    CREATE INDEX dicom_studies_date ON dicom_studies (datastore_id, study_date);
    CREATE INDEX dicom_studies_study_id ON dicom_studies (datastore_id, study_id);

    CREATE TABLE dicom_series (
        image_set_id TEXT COLLATE "C" PRIMARY KEY,
        datastore_id TEXT COLLATE "C" NOT NULL,
        study_uid TEXT COLLATE "C" NOT NULL,
        series_uid TEXT COLLATE "C" NOT NULL,
        live SMALLINT NOT NULL CHECK (live IN (0, 1)),
        study_date TEXT COLLATE "C",
        study_time TEXT COLLATE "C",
        accession_number TEXT COLLATE "C",
        referring_physician_name TEXT COLLATE "C",
        study_description TEXT COLLATE "C",
        patient_name TEXT COLLATE "C",
        patient_id TEXT COLLATE "C",
        patient_birth_date TEXT COLLATE "C",
        patient_sex TEXT COLLATE "C",
        study_id TEXT COLLATE "C",
        modality TEXT COLLATE "C",
        series_description TEXT COLLATE "C",
        body_part TEXT COLLATE "C",
        series_number INTEGER,
        series_date TEXT COLLATE "C",
        series_time TEXT COLLATE "C",
        pps_start_date TEXT COLLATE "C",
        pps_start_time TEXT COLLATE "C",
        num_instances INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX dicom_series_study ON dicom_series (datastore_id, study_uid, series_uid) WHERE live = 1;
    CREATE INDEX dicom_series_uid ON dicom_series (datastore_id, series_uid) WHERE live = 1;

    CREATE TABLE dicom_instances (
        image_set_id TEXT COLLATE "C" NOT NULL,
        sop_uid TEXT COLLATE "C" NOT NULL,
        datastore_id TEXT COLLATE "C" NOT NULL,
        study_uid TEXT COLLATE "C" NOT NULL,
        series_uid TEXT COLLATE "C" NOT NULL,
        sop_class_uid TEXT COLLATE "C",
        instance_number INTEGER,
        rows INTEGER,
        columns INTEGER,
        bits_allocated INTEGER,
        number_of_frames INTEGER,
        frame_ids TEXT COLLATE "C" NOT NULL,
        stored_ts TEXT COLLATE "C",
        PRIMARY KEY (image_set_id, sop_uid)
    );
    CREATE INDEX dicom_instances_sop ON dicom_instances (datastore_id, sop_uid);
    """,
    # 7: the event outbox (storage/events_sql.py): one row per state change, written in the change's
    # transaction with seq NULL; readers number committed rows in id order (gap-free, commit order).
    # Webhook cursors and their delivery leases.
    """
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        seq BIGINT UNIQUE,
        time DOUBLE PRECISION NOT NULL,
        detail_type TEXT NOT NULL,
        datastore_id TEXT COLLATE "C" NOT NULL,
        image_set_id TEXT COLLATE "C",
        detail TEXT NOT NULL
    );
    CREATE INDEX events_pending ON events (id) WHERE seq IS NULL;
    CREATE TABLE webhook_cursors (
        name TEXT PRIMARY KEY,
        delivered_seq BIGINT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error TEXT,
        lease_owner TEXT,
        lease_expires DOUBLE PRECISION
    );
    """,
]
