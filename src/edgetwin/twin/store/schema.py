"""The SQLite schema, as numbered migrations applied at start.

``PRAGMA user_version`` holds the number of migrations applied. A new
schema change is a new entry at the end of :data:`MIGRATIONS`; entries are
never edited once released.
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: devices, models, twins, and the cloud-sync outbox (latest value per field).
    """
    CREATE TABLE models (
        id TEXT PRIMARY KEY,
        body BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        body BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'unknown',
        last_online INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE twins (
        device TEXT NOT NULL,
        property TEXT NOT NULL,
        desired TEXT,
        desired_ts INTEGER NOT NULL,
        desired_version INTEGER NOT NULL,
        reported TEXT,
        reported_ts INTEGER NOT NULL,
        reported_version INTEGER NOT NULL,
        PRIMARY KEY (device, property)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        device TEXT NOT NULL,
        field TEXT NOT NULL,
        value BLOB NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (device, field)
    ) WITHOUT ROWID;
    """,
    # 2: each device's merged spec for the mappers, kept so start-up need not rebuild it.
    """
    ALTER TABLE devices ADD COLUMN spec_topic TEXT;
    ALTER TABLE devices ADD COLUMN spec BLOB;
    """,
    # 3: each desired value's write lifecycle, and the history of accepted changes: appended
    # in seq order, each row pointing at its device's row before it (prev); history_heads holds
    # each device's newest as of its row '' (store/_history.py). No index: an index by device
    # made every commit write a page per device it touched (12 µs a row against 2-5).
    """
    CREATE TABLE writes (
        device TEXT NOT NULL,
        property TEXT NOT NULL,
        phase TEXT NOT NULL,
        value TEXT NOT NULL,
        by TEXT NOT NULL,
        set_ms INTEGER NOT NULL,
        sent_ms INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        deadline_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (device, property)
    ) WITHOUT ROWID;
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        device TEXT NOT NULL,
        property TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT,
        detail TEXT,
        prev INTEGER
    );
    CREATE TABLE history_heads (
        device TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
