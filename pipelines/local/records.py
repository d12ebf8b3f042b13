"""SQLite (WAL) records of the local engine: short transactions keep concurrent and killed runs consistent."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.local.api_common import dumps, loads, now

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind     TEXT NOT NULL,      -- pipeline, training-job, model-package, endpoint, ...
    name     TEXT NOT NULL,      -- unique per kind (model packages: their ARN)
    arn      TEXT NOT NULL,
    status   TEXT,
    parent   TEXT,               -- package group of a package, tuning job of a trial
    owner    TEXT,               -- pipeline execution ARN that created the resource
    version  INTEGER,            -- model package version within its group
    created  REAL NOT NULL,
    modified REAL NOT NULL,
    body     TEXT NOT NULL,      -- the Describe* response as JSON
    extra    TEXT,               -- local-only state (endpoint pid/port, tuning trial summaries)
    PRIMARY KEY (kind, name)
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_version ON resources (kind, parent, version)
    WHERE version IS NOT NULL;
CREATE INDEX IF NOT EXISTS resources_arn ON resources (arn);
CREATE INDEX IF NOT EXISTS resources_owner ON resources (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS executions (
    arn            TEXT PRIMARY KEY,
    pipeline_name  TEXT NOT NULL,
    execution_id   TEXT NOT NULL,
    status         TEXT NOT NULL,
    failure_reason TEXT,
    display_name   TEXT,
    description    TEXT,
    parameters     TEXT NOT NULL,   -- resolved values {name: value}
    given          TEXT NOT NULL,   -- PipelineParameters as started [{Name, Value}]
    parallelism    INTEGER,
    definition     TEXT NOT NULL,   -- snapshot taken at start, like SageMaker
    options        TEXT NOT NULL,   -- engine options (spot interruptions, lambda handlers, server command)
    client_token   TEXT,
    created        REAL NOT NULL,
    modified       REAL NOT NULL,
    worker_pid     INTEGER,
    heartbeat      REAL
);
CREATE INDEX IF NOT EXISTS executions_pipeline ON executions (pipeline_name);
CREATE TABLE IF NOT EXISTS steps (
    execution_arn  TEXT NOT NULL,
    name           TEXT NOT NULL,
    type           TEXT NOT NULL,
    display_name   TEXT,
    description    TEXT,
    status         TEXT NOT NULL,
    start          REAL,
    end            REAL,
    attempt_count  INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    metadata       TEXT,
    properties     TEXT,            -- what `Get Steps.<name>...` resolves against
    cache_key      TEXT,
    cache_source   TEXT,            -- execution ARN a cache hit came from
    outputs        TEXT,            -- objects the step produced; a cache hit needs them all
    PRIMARY KEY (execution_arn, name)
);
CREATE INDEX IF NOT EXISTS steps_cache ON steps (name, cache_key) WHERE cache_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    execution_arn  TEXT NOT NULL,
    step_name      TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    status         TEXT NOT NULL,   -- Executing, Succeeded, Failed, Stopped
    exit_code      INTEGER,
    start          REAL NOT NULL,
    end            REAL,
    log_path       TEXT,
    job_arn        TEXT,
    failure_reason TEXT,
    PRIMARY KEY (execution_arn, step_name, attempt)
);
"""

RUNNING_STEP = ("Starting", "Executing", "Stopping")
RUNNING_EXECUTION = ("Executing", "Stopping")


@dataclass
class Resource:
    """One row of `resources` with its JSON decoded."""

    kind: str
    name: str
    arn: str
    status: str | None
    parent: str | None
    owner: str | None
    version: int | None
    created: float
    modified: float
    body: dict[str, Any]
    extra: dict[str, Any]


def _resource(row: sqlite3.Row) -> Resource:
    plain = {k: row[k] for k in row.keys() if k not in ("body", "extra")}  # noqa: SIM118 - Row has no iter
    return Resource(**plain, body=loads(row["body"]), extra=loads(row["extra"]) or {})


class Records:
    """Access to `root/records.db`; one connection per transaction, so threads never share one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "records.db"
        conn = self._connect()
        try:
            conn.executescript(SCHEMA)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        # WAL lets readers (describe/list) run while a worker writes; NORMAL sync is durable at checkpoints.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlocks)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    # --- resources -------------------------------------------------------------------------------
    def insert_resource(
        self,
        kind: str,
        name: str,
        arn: str,
        body: dict[str, Any],
        *,
        status: str | None = None,
        parent: str | None = None,
        owner: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Insert a resource; False when one of that kind and name exists already."""
        stamp = now()
        try:
            with self.tx() as conn:
                conn.execute(
                    "INSERT INTO resources (kind, name, arn, status, parent, owner, created, modified, body,"
                    " extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, name, arn, status, parent, owner, stamp, stamp, dumps(body), dumps(extra or {})),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def insert_versioned(
        self, kind: str, parent: str, build: Callable[[int], tuple[str, str, dict[str, Any], str | None]]
    ) -> Resource:
        """Insert the next version under `parent` (1, 2, 3...) in one transaction, safe across processes."""
        with self.tx() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM resources WHERE kind = ? AND parent = ?",
                (kind, parent),
            ).fetchone()
            version = int(row[0])
            name, arn, body, status = build(version)
            stamp = now()
            conn.execute(
                "INSERT INTO resources (kind, name, arn, status, parent, version, created, modified, body,"
                " extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}')",
                (kind, name, arn, status, parent, version, stamp, stamp, dumps(body)),
            )
        found = self.get_resource(kind, name)
        assert found is not None
        return found

    def update_resource(
        self,
        kind: str,
        name: str,
        *,
        body: dict[str, Any] | None = None,
        status: str | None = None,
        extra: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> None:
        sets, params = ["modified = ?"], [now()]
        for column, value in (("body", body), ("extra", extra)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(dumps(value))
        for column, value in (("status", status), ("owner", owner)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        with self.tx() as conn:
            conn.execute(
                f"UPDATE resources SET {', '.join(sets)} WHERE kind = ? AND name = ?", (*params, kind, name)
            )

    def get_resource(self, kind: str, name: str) -> Resource | None:
        rows = self.query("SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name))
        return _resource(rows[0]) if rows else None

    def get_resource_by_arn(self, kind: str, arn: str) -> Resource | None:
        rows = self.query("SELECT * FROM resources WHERE kind = ? AND arn = ?", (kind, arn))
        return _resource(rows[0]) if rows else None

    def list_resources(self, kind: str, parent: str | None = None) -> list[Resource]:
        if parent is None:
            rows = self.query("SELECT * FROM resources WHERE kind = ? ORDER BY created", (kind,))
        else:
            rows = self.query(
                "SELECT * FROM resources WHERE kind = ? AND parent = ? ORDER BY created", (kind, parent)
            )
        return [_resource(r) for r in rows]

    def delete_resource(self, kind: str, name: str) -> bool:
        with self.tx() as conn:
            return (
                conn.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name)).rowcount > 0
            )

    # --- executions ------------------------------------------------------------------------------
    def insert_execution(self, row: dict[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.tx() as conn:
            conn.execute(f"INSERT INTO executions ({columns}) VALUES ({marks})", tuple(row.values()))

    def get_execution(self, arn: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM executions WHERE arn = ?", (arn,))
        return rows[0] if rows else None

    def find_execution_by_token(self, pipeline_name: str, token: str) -> sqlite3.Row | None:
        rows = self.query(
            "SELECT * FROM executions WHERE pipeline_name = ? AND client_token = ?", (pipeline_name, token)
        )
        return rows[0] if rows else None

    def list_executions(self, pipeline_name: str | None = None) -> list[sqlite3.Row]:
        if pipeline_name is None:
            return self.query("SELECT * FROM executions ORDER BY created")
        return self.query(
            "SELECT * FROM executions WHERE pipeline_name = ? ORDER BY created", (pipeline_name,)
        )

    def set_execution(self, arn: str, **fields: Any) -> None:
        fields.setdefault("modified", now())
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as conn:
            conn.execute(f"UPDATE executions SET {sets} WHERE arn = ?", (*fields.values(), arn))

    def beat(self, arn: str, pid: int) -> str | None:
        """Worker heartbeat; returns the execution status so the worker notices a stop request."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE executions SET heartbeat = ? WHERE arn = ? AND worker_pid = ?", (now(), arn, pid)
            )
            row = conn.execute("SELECT status FROM executions WHERE arn = ?", (arn,)).fetchone()
        return None if row is None else row["status"]

    def claim_execution(self, arn: str, old_pid: int | None, new_pid: int | None, status: str) -> bool:
        """Hand an execution to a new worker unless someone did meanwhile (compare-and-set on the pid)."""
        with self.tx() as conn:
            cursor = conn.execute(
                "UPDATE executions SET worker_pid = ?, heartbeat = ?, status = ?, failure_reason = NULL,"
                " modified = ? WHERE arn = ? AND worker_pid IS ?",
                (new_pid, now(), status, now(), arn, old_pid),
            )
            return cursor.rowcount == 1

    # --- steps and attempts ----------------------------------------------------------------------
    def get_steps(self, execution_arn: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM steps WHERE execution_arn = ? ORDER BY start, rowid", (execution_arn,)
        )

    def step_started(self, execution_arn: str, step: dict[str, Any]) -> None:
        """Mark a step Executing; a retried step keeps its row, so AttemptCount keeps counting."""
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO steps (execution_arn, name, type, display_name, description, status, start)"
                " VALUES (?, ?, ?, ?, ?, 'Executing', ?) ON CONFLICT (execution_arn, name) DO UPDATE SET"
                " status = 'Executing', start = excluded.start, end = NULL, failure_reason = NULL,"
                " cache_source = NULL",
                (
                    execution_arn,
                    step["Name"],
                    step["Type"],
                    step.get("DisplayName"),
                    step.get("Description"),
                    now(),
                ),
            )

    def attempt_started(self, execution_arn: str, step_name: str, log_path: str | None) -> int:
        with self.tx() as conn:
            row = conn.execute(
                "SELECT attempt_count FROM steps WHERE execution_arn = ? AND name = ?",
                (execution_arn, step_name),
            ).fetchone()
            attempt = int(row["attempt_count"]) + 1
            conn.execute(
                "UPDATE steps SET attempt_count = ? WHERE execution_arn = ? AND name = ?",
                (attempt, execution_arn, step_name),
            )
            conn.execute(
                "INSERT INTO attempts (execution_arn, step_name, attempt, status, start, log_path)"
                " VALUES (?, ?, ?, 'Executing', ?, ?)",
                (execution_arn, step_name, attempt, now(), log_path),
            )
        return attempt

    def attempt_update(self, execution_arn: str, step_name: str, attempt: int, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as conn:
            conn.execute(
                f"UPDATE attempts SET {sets} WHERE execution_arn = ? AND step_name = ? AND attempt = ?",
                (*fields.values(), execution_arn, step_name, attempt),
            )

    def step_finished(
        self,
        execution_arn: str,
        step_name: str,
        *,
        status: str,
        failure_reason: str | None,
        metadata: dict[str, Any] | None,
        properties: dict[str, Any] | None,
        cache_key: str | None = None,
        cache_source: str | None = None,
        outputs: list[str] | None = None,
        attempt: int | None = None,
        exit_code: int | None = None,
    ) -> None:
        """The terminal status of a step and of its last attempt, in one transaction."""
        stamp = now()
        fields = {
            "status": status,
            "end": stamp,
            "failure_reason": failure_reason,
            "metadata": dumps(metadata or {}),
            "properties": None if properties is None else dumps(properties),
            "cache_key": cache_key,
            "cache_source": cache_source,
            "outputs": None if outputs is None else dumps(outputs),
        }
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as conn:
            conn.execute(
                f"UPDATE steps SET {sets} WHERE execution_arn = ? AND name = ?",
                (*fields.values(), execution_arn, step_name),
            )
            if attempt is not None:
                conn.execute(
                    "UPDATE attempts SET status = ?, end = ?, exit_code = ?, failure_reason = ?"
                    " WHERE execution_arn = ? AND step_name = ? AND attempt = ?",
                    (status, stamp, exit_code, failure_reason, execution_arn, step_name, attempt),
                )

    def get_attempts(self, execution_arn: str, step_name: str | None = None) -> list[sqlite3.Row]:
        if step_name is None:
            return self.query(
                "SELECT * FROM attempts WHERE execution_arn = ? ORDER BY start", (execution_arn,)
            )
        return self.query(
            "SELECT * FROM attempts WHERE execution_arn = ? AND step_name = ? ORDER BY attempt",
            (execution_arn, step_name),
        )

    def cache_candidates(
        self, pipeline_name: str, step_name: str, key: str, not_before: float
    ) -> list[sqlite3.Row]:
        """Succeeded runs (not hits) of the same step of the same pipeline with the same key, newest first."""
        return self.query(
            "SELECT s.* FROM steps s JOIN executions e ON e.arn = s.execution_arn WHERE e.pipeline_name = ?"
            " AND s.name = ? AND s.cache_key = ? AND s.status = 'Succeeded' AND s.cache_source IS NULL"
            " AND s.end >= ? ORDER BY s.end DESC",
            (pipeline_name, step_name, key, not_before),
        )

    def finish_execution(self, arn: str, status: str, failure_reason: str | None) -> None:
        self.set_execution(arn, status=status, failure_reason=failure_reason)

    def mark_interrupted(self, arn: str, pid: int | None, reason: str) -> bool:
        """A worker vanished: fail the execution, its running steps, attempts and jobs in one transaction.

        Guarded on the pid so a retry that already moved the execution to a new worker is left alone.
        """
        stamp = now()
        with self.tx() as conn:
            cursor = conn.execute(
                "UPDATE executions SET status = 'Failed', failure_reason = ?, modified = ?"
                " WHERE arn = ? AND worker_pid IS ? AND status IN ('Executing', 'Stopping')",
                (reason, stamp, arn, pid),
            )
            if cursor.rowcount == 0:
                return False
            step_reason = "Step interrupted: the execution's worker process ended while the step ran."
            conn.execute(
                "UPDATE steps SET status = 'Failed', end = ?, failure_reason = ? WHERE execution_arn = ?"
                " AND status IN ('Starting', 'Executing', 'Stopping')",
                (stamp, step_reason, arn),
            )
            conn.execute(
                "UPDATE attempts SET status = 'Failed', end = ?, failure_reason = ? WHERE execution_arn = ?"
                " AND status = 'Executing'",
                (stamp, step_reason, arn),
            )
            for row in conn.execute(
                "SELECT kind, name, body FROM resources"
                " WHERE owner = ? AND status IN ('InProgress', 'Stopping')",
                (arn,),
            ).fetchall():
                body = loads(row["body"])
                status_key = next((k for k in body if k.endswith("JobStatus")), None)
                if status_key:
                    body[status_key] = "Failed"
                body["FailureReason"] = step_reason
                conn.execute(
                    "UPDATE resources SET status = 'Failed', body = ?, modified = ?"
                    " WHERE kind = ? AND name = ?",
                    (dumps(body), stamp, row["kind"], row["name"]),
                )
        return True
