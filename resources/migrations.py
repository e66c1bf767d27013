"""Versioned schema migrations, applied in order on first use of a database.

Each migration is a numbered list of SQL statements. Applied versions are recorded in
`data_mash.schema_migrations`; a transaction-level advisory lock makes concurrent first uses
(two CLI commands, parallel tests, several Dagster workers) apply each migration exactly once.
Never edit a released migration: add the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from resources.guard import GUARDED_SCHEMAS

# Arbitrary constant: the advisory lock key that serialises migrations.
_MIGRATION_LOCK = 0x0DA7A3A54


# Put the write guard on every table of the guarded schemas (resources/guard.py); a migration that adds tables ends
# with this statement again. Tables made at run time (staging tables, partitions) are guarded where they are made.
GUARD_EVERY_TABLE = f"""
    DO $$ DECLARE t regclass; BEGIN
        FOR t IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname IN ({", ".join(f"'{s}'" for s in GUARDED_SCHEMAS)}) AND c.relkind IN ('r', 'p') LOOP
            PERFORM data_mash.guard(t);
        END LOOP;
    END $$
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _new_platform_v1_ddl() -> list[str]:
    """The new platform's tables as canonical -> new platform mapping v1 defines them (frozen with this migration)."""
    from canonical.targets import load_target_mapping, target_ddl

    mapping = load_target_mapping()
    if mapping.version != "1.0.0":
        raise RuntimeError("migration 9 creates new_platform v1.0.0; a new mapping version needs its own migration")
    return target_ddl(mapping, "new_platform")


def _canonical_v1_ddl() -> tuple[str, ...]:
    """Canonical Policy Model v1 tables (frozen), one LIST partition per source drop, plus quarantine and loads."""
    from canonical.tables import V1_TABLES
    from resources.sqlnames import pg_type

    statements = ["CREATE SCHEMA IF NOT EXISTS canonical"]
    for table in V1_TABLES.values():
        columns = ", ".join(f"{c.name} {pg_type(c.type)}" for c in table.columns)
        statements.append(
            f"CREATE TABLE canonical.{table.name} (drop_key text NOT NULL, source_record_no bigint NOT NULL, "
            f"wal_id bigint, mapping_version text NOT NULL, dq_score numeric(5,2) NOT NULL, dq_findings text NOT NULL, "
            f"{columns}, PRIMARY KEY (drop_key, source_record_no)) PARTITION BY LIST (drop_key)"
        )
    statements += [
        """
        CREATE TABLE canonical.quarantine (
            id               bigserial   PRIMARY KEY,
            source           text        NOT NULL,
            drop_id          text        NOT NULL,
            table_name       text        NOT NULL,
            source_record_no bigint      NOT NULL,
            policy_id        text,
            field            text,
            reason           text        NOT NULL,
            detail           text        NOT NULL,
            wal_id           bigint,
            quarantined_at   timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX canonical_quarantine_by_load ON canonical.quarantine (source, drop_id, table_name)",
        """
        CREATE TABLE canonical.loads (
            source              text        NOT NULL,
            drop_id             text        NOT NULL,
            table_name          text        NOT NULL,
            mapping             text        NOT NULL,
            mapping_version     text        NOT NULL,
            mapping_hash        text        NOT NULL,
            records_in          bigint      NOT NULL,
            records_mapped      bigint      NOT NULL,
            records_quarantined bigint      NOT NULL,
            mean_dq_score       numeric(5,2),
            wal_id              bigint      REFERENCES wal.intents (id),
            loaded_at           timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (source, drop_id, table_name),
            CHECK (records_mapped + records_quarantined = records_in)
        )
        """,
    ]
    return tuple(statements)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "intake: drops, files, quarantine, staging schema",
        (
            "CREATE SCHEMA IF NOT EXISTS intake",
            "CREATE SCHEMA IF NOT EXISTS staging",
            """
            CREATE TABLE intake.drops (
                source        text        NOT NULL,
                drop_id       text        NOT NULL,
                content_hash  text        NOT NULL,
                path          text        NOT NULL,
                files         jsonb       NOT NULL DEFAULT '{}'::jsonb,
                registered_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source, drop_id)
            )
            """,
            "CREATE INDEX drops_by_hash ON intake.drops (source, content_hash)",
            """
            CREATE TABLE intake.files (
                source              text        NOT NULL,
                drop_id             text        NOT NULL,
                kind                text        NOT NULL,
                file_name           text        NOT NULL,
                file_sha256         text        NOT NULL,
                file_bytes          bigint      NOT NULL,
                records_read        bigint      NOT NULL,
                records_parsed      bigint      NOT NULL,
                records_quarantined bigint      NOT NULL,
                staging_table       text        NOT NULL,
                loaded_at           timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source, drop_id, kind),
                CHECK (records_parsed + records_quarantined = records_read)
            )
            """,
            """
            CREATE TABLE intake.quarantine (
                id             bigserial   PRIMARY KEY,
                source         text        NOT NULL,
                drop_id        text        NOT NULL,
                kind           text        NOT NULL,
                file_name      text        NOT NULL,
                record_no      bigint      NOT NULL,
                byte_offset    bigint,
                field          text,
                reason         text        NOT NULL,
                detail         text        NOT NULL,
                raw            bytea,
                quarantined_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX quarantine_by_file ON intake.quarantine (source, drop_id, kind, record_no)",
            """
            CREATE TABLE intake.staging_tables (
                table_name text  PRIMARY KEY,
                source     text  NOT NULL,
                kind       text  NOT NULL,
                columns    jsonb NOT NULL
            )
            """,
        ),
    ),
    Migration(
        2,
        "wal: intents, hash-chained log, chain heads; wal ids on intake rows",
        (
            "CREATE SCHEMA IF NOT EXISTS wal",
            """
            CREATE TABLE wal.intents (
                id                  bigserial   PRIMARY KEY,
                namespace           text        NOT NULL,
                operation           text        NOT NULL,
                target              text        NOT NULL,
                idempotency_key     text        NOT NULL UNIQUE,
                payload             jsonb       NOT NULL,
                result              jsonb,
                max_retries         integer     NOT NULL,
                retry_delay_seconds double precision NOT NULL,
                backoff             double precision NOT NULL,
                ttl_seconds         integer     NOT NULL,
                run_id              text,
                job_name            text,
                asset_key           text,
                partition_key       text,
                wave                text,
                status              text        NOT NULL CHECK (status IN
                                        ('pending', 'committed', 'failed', 'compensated', 'dead_lettered')),
                attempts            integer     NOT NULL DEFAULT 1,
                error               text,
                created_at          timestamptz NOT NULL,
                updated_at          timestamptz NOT NULL,
                next_attempt_at     timestamptz
            )
            """,
            "CREATE INDEX intents_by_status ON wal.intents (status, next_attempt_at)",
            "CREATE INDEX intents_by_namespace ON wal.intents (namespace, created_at)",
            """
            CREATE TABLE wal.log (
                seq       bigserial   PRIMARY KEY,
                namespace text        NOT NULL,
                chain_pos bigint      NOT NULL,
                intent_id bigint      NOT NULL REFERENCES wal.intents (id),
                event     text        NOT NULL,
                at        timestamptz NOT NULL,
                body      jsonb       NOT NULL,
                prev_hash text        NOT NULL,
                hash      text        NOT NULL,
                UNIQUE (namespace, chain_pos)
            )
            """,
            "CREATE INDEX log_by_intent ON wal.log (intent_id, seq)",
            "CREATE INDEX log_by_time ON wal.log (namespace, at)",
            """
            CREATE TABLE wal.chain_heads (
                namespace text   PRIMARY KEY,
                chain_pos bigint NOT NULL,
                hash      text   NOT NULL
            )
            """,
            "ALTER TABLE intake.files ADD COLUMN wal_id bigint REFERENCES wal.intents (id)",
            "ALTER TABLE intake.quarantine ADD COLUMN wal_id bigint",
        ),
    ),
    Migration(
        3,
        "canonical_registry: model versions (definition, schema hash, frozen) and declared upgrades",
        (
            "CREATE SCHEMA IF NOT EXISTS canonical_registry",
            """
            CREATE TABLE canonical_registry.model_versions (
                version       text        PRIMARY KEY,
                schema_hash   text        NOT NULL,
                definition    jsonb       NOT NULL,
                frozen        boolean     NOT NULL DEFAULT false,
                registered_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE canonical_registry.upgrades (
                from_version  text        NOT NULL REFERENCES canonical_registry.model_versions (version),
                to_version    text        NOT NULL REFERENCES canonical_registry.model_versions (version),
                description   text        NOT NULL,
                steps         jsonb       NOT NULL DEFAULT '[]'::jsonb,
                registered_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (from_version, to_version),
                CHECK (from_version <> to_version)
            )
            """,
        ),
    ),
    Migration(4, "canonical: Canonical Policy Model v1 tables, quarantine, loads", _canonical_v1_ddl()),
    Migration(
        5,
        "canonical_registry: the mapping files used, by content hash",
        (
            """
            CREATE TABLE canonical_registry.mappings (
                mapping_hash  text        PRIMARY KEY,
                mapping       text        NOT NULL,
                version       text        NOT NULL,
                source        text        NOT NULL,
                model_version text        NOT NULL REFERENCES canonical_registry.model_versions (version),
                content       jsonb       NOT NULL,
                first_used_at timestamptz NOT NULL DEFAULT now(),
                UNIQUE (mapping, version, mapping_hash)
            )
            """,
        ),
    ),
    Migration(
        6,
        "canonical: an occurrence number in every canonical key (one source record may give several rows)",
        tuple(
            statement
            for table in ("policies", "coverages", "parties", "payments", "endorsements", "correspondence", "claim_links")
            for statement in (
                f"ALTER TABLE canonical.{table} ADD COLUMN occurrence smallint NOT NULL DEFAULT 1",
                f"ALTER TABLE canonical.{table} DROP CONSTRAINT {table}_pkey",
                f"ALTER TABLE canonical.{table} ADD PRIMARY KEY (drop_key, source_record_no, occurrence)",
            )
        ),
    ),
    Migration(
        7,
        "routing decisions with history; the coexistence registry with history and conflicts",
        (
            "CREATE SCHEMA IF NOT EXISTS routing",
            "CREATE SCHEMA IF NOT EXISTS coexistence",
            """
            CREATE TABLE routing.decisions (
                policy_id        text        PRIMARY KEY,
                source_system    text        NOT NULL,
                target           text        NOT NULL,
                rule_name        text        NOT NULL,
                rule_set         text        NOT NULL,
                rule_set_version text        NOT NULL,
                rule_set_hash    text        NOT NULL,
                decided_at       timestamptz NOT NULL,
                wal_id           bigint      REFERENCES wal.intents (id)
            )
            """,
            """
            CREATE TABLE routing.decision_history (
                id               bigserial   PRIMARY KEY,
                policy_id        text        NOT NULL,
                from_target      text,
                to_target        text        NOT NULL,
                from_rule        text,
                to_rule          text        NOT NULL,
                rule_set_version text        NOT NULL,
                decided_at       timestamptz NOT NULL,
                wal_id           bigint
            )
            """,
            "CREATE INDEX decision_history_by_policy ON routing.decision_history (policy_id, id)",
            """
            CREATE TABLE coexistence.registry (
                policy_id         text        PRIMARY KEY,
                source_system     text        NOT NULL,
                system_of_record  text        NOT NULL,
                planned_target    text        NOT NULL,
                wave              text,
                routing_rule      text,
                rule_set_version  text,
                pinned            boolean     NOT NULL DEFAULT false,
                since             timestamptz NOT NULL,
                updated_at        timestamptz NOT NULL,
                wal_id            bigint
            )
            """,
            """
            CREATE TABLE coexistence.history (
                id               bigserial   PRIMARY KEY,
                policy_id        text        NOT NULL,
                at               timestamptz NOT NULL,
                change           text        NOT NULL CHECK (change IN
                                     ('routing', 'wave_load', 'rollback', 'sync', 'manual_override')),
                from_system      text,
                to_system        text        NOT NULL,
                from_target      text,
                to_target        text        NOT NULL,
                rule             text,
                rule_set_version text,
                reason           text        NOT NULL,
                actor            text        NOT NULL,
                wal_id           bigint
            )
            """,
            "CREATE INDEX coexistence_history_by_policy ON coexistence.history (policy_id, id)",
            """
            CREATE TABLE coexistence.conflicts (
                id               bigserial   PRIMARY KEY,
                policy_id        text        NOT NULL,
                system_of_record text        NOT NULL,
                planned_target   text        NOT NULL,
                routed_target    text        NOT NULL,
                rule             text        NOT NULL,
                rule_set_version text        NOT NULL,
                why              text        NOT NULL,
                detected_at      timestamptz NOT NULL,
                resolved_at      timestamptz,
                wal_id           bigint,
                UNIQUE (policy_id, routed_target, rule_set_version)
            )
            """,
        ),
    ),
    Migration(
        8,
        "waves: plans, waves with criteria, gates and status, candidates per wave",
        (
            "CREATE SCHEMA IF NOT EXISTS waves",
            """
            CREATE TABLE waves.plans (
                plan_id    bigserial   PRIMARY KEY,
                name       text        NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                created_by text        NOT NULL,
                book       text        NOT NULL
            )
            """,
            """
            CREATE TABLE waves.waves (
                wave_id         text        PRIMARY KEY,
                plan_id         bigint      NOT NULL REFERENCES waves.plans (plan_id),
                number          integer     NOT NULL,
                name            text        NOT NULL,
                target          text        NOT NULL,
                criteria        jsonb       NOT NULL,
                size_cap        integer     NOT NULL CHECK (size_cap > 0),
                scheduled_start timestamptz NOT NULL,
                gates           jsonb       NOT NULL,
                estimated       integer     NOT NULL,
                status          text        NOT NULL DEFAULT 'draft' CHECK (status IN
                                    ('draft', 'approved', 'running', 'completed', 'failed', 'rolled_back')),
                status_reason   text,
                attempts        integer     NOT NULL DEFAULT 0,
                approved_by     text,
                approved_at     timestamptz,
                updated_at      timestamptz NOT NULL DEFAULT now(),
                UNIQUE (plan_id, number)
            )
            """,
            """
            CREATE TABLE waves.candidates (
                wave_id       text        NOT NULL REFERENCES waves.waves (wave_id),
                policy_id     text        NOT NULL,
                source_system text        NOT NULL,
                dq_score      numeric(5,2),
                selected_at   timestamptz NOT NULL,
                wal_id        bigint,
                PRIMARY KEY (wave_id, policy_id)
            )
            """,
        ),
    ),
    Migration(
        9,
        "targets: the new platform's normalized schema (canonical -> new platform mapping v1), legacy batch files, "
        "DQ queue, coexistence bridge, saved registry rows for compensation, reconciliations; candidates' targets",
        (
            "CREATE SCHEMA IF NOT EXISTS new_platform",
            *_new_platform_v1_ddl(),
            "CREATE SCHEMA IF NOT EXISTS targets",
            """
            CREATE TABLE targets.schema_versions (
                target       text        PRIMARY KEY,
                version      text        NOT NULL,
                installed_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "INSERT INTO targets.schema_versions (target, version) VALUES ('new_platform', '1.0.0')",
            """
            CREATE TABLE targets.outbound_files (
                file_id        bigserial   PRIMARY KEY,
                wave_id        text        NOT NULL,
                path           text        NOT NULL,
                records        bigint      NOT NULL,
                sha256         text        NOT NULL,
                annual_premium numeric(18,2) NOT NULL,
                status         text        NOT NULL CHECK (status IN ('delivered', 'withdrawn')),
                written_at     timestamptz NOT NULL,
                withdrawn_at   timestamptz,
                wal_id         bigint      NOT NULL REFERENCES wal.intents (id)
            )
            """,
            "CREATE UNIQUE INDEX outbound_files_one_delivered ON targets.outbound_files (wave_id) WHERE status = 'delivered'",
            """
            CREATE TABLE targets.outbound_records (
                file_id      bigint      NOT NULL REFERENCES targets.outbound_files (file_id),
                policy_id    text        NOT NULL,
                record_no    bigint      NOT NULL,
                withdrawn_at timestamptz,
                PRIMARY KEY (file_id, policy_id)
            )
            """,
            """
            CREATE TABLE targets.dq_queue (
                policy_id        text        NOT NULL,
                wave_id          text        NOT NULL,
                source_system    text        NOT NULL,
                routing_rule     text        NOT NULL,
                reasons          text        NOT NULL,
                dq_score         numeric(5,2),
                queued_at        timestamptz NOT NULL,
                wal_id           bigint      NOT NULL REFERENCES wal.intents (id),
                released_at      timestamptz,
                released_by_wave text,
                PRIMARY KEY (policy_id, wave_id)
            )
            """,
            "CREATE INDEX dq_queue_by_wal ON targets.dq_queue (wal_id)",
            """
            CREATE TABLE targets.coexistence_bridge (
                policy_id            text        PRIMARY KEY,
                wave_id              text        NOT NULL,
                authoritative_system text        NOT NULL,
                legacy_system        text        NOT NULL,
                since                timestamptz NOT NULL,
                wal_id               bigint      NOT NULL REFERENCES wal.intents (id)
            )
            """,
            """
            CREATE TABLE targets.registry_saved (
                saved_by_wal bigint NOT NULL,
                LIKE coexistence.registry,
                PRIMARY KEY (saved_by_wal, policy_id)
            )
            """,
            """
            CREATE TABLE targets.reconciliations (
                id            bigserial   PRIMARY KEY,
                wave_id       text        NOT NULL,
                target        text        NOT NULL,
                reconciled_at timestamptz NOT NULL,
                passed        boolean     NOT NULL,
                checks        jsonb       NOT NULL
            )
            """,
            "CREATE INDEX reconciliations_by_wave ON targets.reconciliations (wave_id, target, id)",
            "ALTER TABLE waves.candidates ADD COLUMN target text",
            "ALTER TABLE waves.waves ADD COLUMN report jsonb",
        ),
    ),
    Migration(
        10,
        "canonical: an index on policy_id in every canonical table (waves, reconciliation, audit trails and sync "
        "read canonical rows by policy)",
        tuple(f"CREATE INDEX IF NOT EXISTS {t}_by_policy ON canonical.{t} (policy_id)"
              for t in ("policies", "coverages", "parties", "payments", "endorsements", "correspondence", "claim_links")),
    ),
    Migration(
        11,
        "canonical: the book as the latest version of each policy (canonical.current), the drops applied to it, and "
        "the changes each drop brought, found by per-policy content hash",
        (
            """
            CREATE TABLE canonical.current (
                policy_id    text        PRIMARY KEY,
                source       text        NOT NULL,
                drop_key     text        NOT NULL,
                drop_seq     bigint      NOT NULL,
                content_hash text        NOT NULL,
                status       text,
                version      integer     NOT NULL,
                since        timestamptz NOT NULL,
                wal_id       bigint
            )
            """,
            "CREATE INDEX current_by_drop ON canonical.current (drop_key)",
            """
            CREATE TABLE canonical.book_drops (
                drop_key     text        PRIMARY KEY,
                source       text        NOT NULL,
                drop_id      text        NOT NULL,
                drop_seq     bigint      NOT NULL,
                load_wal_id  bigint,
                mapping_hash text        NOT NULL,
                policies     bigint      NOT NULL,
                new          bigint      NOT NULL,
                changed      bigint      NOT NULL,
                cancelled    bigint      NOT NULL,
                unchanged    bigint      NOT NULL,
                applied_at   timestamptz NOT NULL,
                wal_id       bigint
            )
            """,
            """
            CREATE TABLE canonical.changes (
                id            bigserial   PRIMARY KEY,
                policy_id     text        NOT NULL,
                source        text        NOT NULL,
                drop_key      text        NOT NULL,
                change        text        NOT NULL CHECK (change IN ('new', 'changed', 'cancelled')),
                version       integer     NOT NULL,
                from_drop_key text,
                from_hash     text,
                to_hash       text        NOT NULL,
                detected_at   timestamptz NOT NULL,
                wal_id        bigint
            )
            """,
            "CREATE INDEX changes_by_policy ON canonical.changes (policy_id, id)",
            "CREATE INDEX changes_by_drop ON canonical.changes (drop_key, change)",
        ),
    ),
    Migration(
        12,
        "sync: the per-policy baseline both systems last agreed on, the nightly sync's decisions (changes, conflicts "
        "and their resolution), rows and baselines saved for compensation, and the nights",
        (
            "CREATE SCHEMA IF NOT EXISTS sync",
            """
            CREATE TABLE sync.baseline (
                policy_id     text        PRIMARY KEY,
                wave_id       text        NOT NULL,
                legacy_hash   text        NOT NULL,
                platform_hash text        NOT NULL,
                agreed_at     timestamptz NOT NULL,
                night         date,
                wal_id        bigint      NOT NULL
            )
            """,
            "CREATE INDEX baseline_by_wave ON sync.baseline (wave_id)",
            """
            CREATE TABLE sync.baseline_saved (
                saved_by_wal bigint NOT NULL,
                LIKE sync.baseline,
                PRIMARY KEY (saved_by_wal, policy_id)
            )
            """,
            """
            CREATE TABLE sync.nights (
                night       date        PRIMARY KEY,
                sync_id     text        NOT NULL UNIQUE,
                status      text        NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'rolled_back')),
                started_at  timestamptz NOT NULL,
                finished_at timestamptz,
                report      jsonb,
                status_reason text
            )
            """,
            """
            CREATE TABLE sync.decisions (
                id               bigserial   PRIMARY KEY,
                night            date        NOT NULL,
                policy_id        text        NOT NULL,
                line_of_business text,
                system_of_record text        NOT NULL,
                bridge           boolean     NOT NULL,
                legacy_changed   boolean     NOT NULL,
                platform_changed boolean     NOT NULL,
                conflict         boolean     NOT NULL,
                rule             text,
                action           text        NOT NULL CHECK (action IN
                                     ('to_platform', 'to_legacy', 'accept_platform', 'keep_platform', 'queue')),
                why              text        NOT NULL,
                legacy_from      text,
                legacy_to        text        NOT NULL,
                platform_from    text,
                platform_to      text        NOT NULL,
                legacy_at        timestamptz,
                platform_at      timestamptz,
                decided_at       timestamptz NOT NULL,
                applied_at       timestamptz,
                applied_wal      bigint,
                resolved_at      timestamptz,
                resolution       text,
                undone_at        timestamptz,
                versions         jsonb,
                wal_id           bigint      NOT NULL
            )
            """,
            "CREATE UNIQUE INDEX decisions_once ON sync.decisions (night, policy_id, legacy_to, platform_to, action) "
            "WHERE undone_at IS NULL",
            "CREATE INDEX decisions_by_policy ON sync.decisions (policy_id, id)",
            """
            CREATE TABLE sync.saved_policies (
                saved_by_wal bigint NOT NULL,
                policy_id    text   NOT NULL,
                PRIMARY KEY (saved_by_wal, policy_id)
            )
            """,
            """
            CREATE TABLE sync.saved_rows (
                saved_by_wal bigint NOT NULL,
                table_name   text   NOT NULL,
                policy_id    text   NOT NULL,
                row          jsonb  NOT NULL
            )
            """,
            "CREATE INDEX saved_rows_by_wal ON sync.saved_rows (saved_by_wal, policy_id)",
        ),
    ),
    Migration(
        13,
        "wal: keyed entry hashes over seq and the intent's whole state, principals, signed checkpoints, append-only log",
        (
            "ALTER TABLE wal.intents ADD COLUMN principal text",
            # entries written before this migration keep their plain sha256 (version 1); new ones are keyed (2)
            "ALTER TABLE wal.log ADD COLUMN hash_version smallint NOT NULL DEFAULT 1",
            "ALTER TABLE wal.log ADD COLUMN key_id text",
            """
            CREATE TABLE wal.checkpoints (
                id        bigserial   PRIMARY KEY,
                taken_at  timestamptz NOT NULL,
                body      jsonb       NOT NULL,
                signature text        NOT NULL
            )
            """,
            """
            CREATE FUNCTION wal.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION USING ERRCODE = 'DMW02',
                    MESSAGE = format('%s on %I.%I refused: the WAL is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME);
            END $$
            """,
            "CREATE TRIGGER wal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON wal.log "
            "FOR EACH STATEMENT EXECUTE FUNCTION wal.append_only()",
            "CREATE TRIGGER wal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON wal.checkpoints "
            "FOR EACH STATEMENT EXECUTE FUNCTION wal.append_only()",
            # from which seq on every entry is keyed: a plain-hash entry after it is a rewrite, not history
            "CREATE TABLE wal.meta (key text PRIMARY KEY, value text NOT NULL)",
            "INSERT INTO wal.meta (key, value) SELECT 'keyed_from_seq', (coalesce(max(seq), 0) + 1)::text FROM wal.log",
            "CREATE TRIGGER wal_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON wal.meta "
            "FOR EACH STATEMENT EXECUTE FUNCTION wal.append_only()",
        ),
    ),
    Migration(
        14,
        "the write guard: a change to a product table is refused unless its transaction carries a pending WAL intent",
        (
            """
            CREATE FUNCTION data_mash.require_intent() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                intent text := coalesce(current_setting('data_mash.intent', true), '');
            BEGIN
                IF coalesce(current_setting('data_mash.migration', true), '') <> '' THEN
                    RETURN NULL;  -- a schema migration (resources/migrations.py)
                END IF;
                IF TG_TABLE_SCHEMA = 'new_platform'
                   AND coalesce(current_setting('data_mash.external_writer', true), '') <> '' THEN
                    RETURN NULL;  -- the new platform's own users, outside Data Mash
                END IF;
                IF intent = '' THEN
                    RAISE EXCEPTION USING ERRCODE = 'DMW01',
                        MESSAGE = format('%s on %I.%I refused: no WAL intent is open in this transaction',
                                         TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME),
                        HINT = 'every change to Data Mash''s stored state runs inside a WAL intent '
                               '(resources/wal.py: WriteAheadLog.intent, WalStore.action)';
                END IF;
                IF NOT EXISTS (SELECT 1 FROM wal.intents WHERE id = intent::bigint AND status = 'pending') THEN
                    RAISE EXCEPTION USING ERRCODE = 'DMW01',
                        MESSAGE = format('%s on %I.%I refused: WAL intent %s is not pending', TG_OP, TG_TABLE_SCHEMA,
                                         TG_TABLE_NAME, intent);
                END IF;
                RETURN NULL;
            END $$
            """,
            """
            CREATE FUNCTION data_mash.guard(t regclass) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t AND tgname = 'data_mash_wal_guard') THEN
                    EXECUTE format('CREATE TRIGGER data_mash_wal_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE '
                                   'ON %s FOR EACH STATEMENT EXECUTE FUNCTION data_mash.require_intent()', t);
                END IF;
            END $$
            """,
            GUARD_EVERY_TABLE,
        ),
    ),
    Migration(
        15,
        "intake: each drop's integrity check (verified, refused before staging, or undone after a file failed), "
        "its manifest and the reason",
        (
            "ALTER TABLE intake.drops ADD COLUMN status text NOT NULL DEFAULT 'registered' "
            "CHECK (status IN ('registered', 'verified', 'refused', 'undone'))",
            "ALTER TABLE intake.drops ADD COLUMN manifest jsonb",
            "ALTER TABLE intake.drops ADD COLUMN error text",
            "ALTER TABLE intake.drops ADD COLUMN checked_at timestamptz",
            "ALTER TABLE intake.drops ADD COLUMN wal_id bigint REFERENCES wal.intents (id)",
        ),
    ),
    Migration(
        16,
        "targets: an outbound file is `written` (recorded, beside the pickup folder) before it is `delivered`",
        (
            "ALTER TABLE targets.outbound_files DROP CONSTRAINT outbound_files_status_check",
            "ALTER TABLE targets.outbound_files ADD CONSTRAINT outbound_files_status_check "
            "CHECK (status IN ('written', 'delivered', 'withdrawn'))",
            "DROP INDEX targets.outbound_files_one_delivered",
            "CREATE UNIQUE INDEX outbound_files_one_live ON targets.outbound_files (wave_id) "
            "WHERE status IN ('written', 'delivered')",
        ),
    ),
    Migration(
        17,
        "targets: the load maps in SQL, and a canonical value with no code on the new platform fails it",
        (
            """
            CREATE FUNCTION data_mash.no_code(what text, value text) RETURNS text LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION USING ERRCODE = 'DMT01',
                    MESSAGE = format('%s value %L has no code on the new platform', what, value),
                    HINT = 'add the code to canonical/mappings/new_platform.yaml (a new mapping version)';
            END $$
            """,
        ),
    ),
)


def migrate(engine: Engine) -> list[int]:
    """Bring the database up to the latest version; return the versions applied now."""
    applied_now: list[int] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        conn.execute(text("SELECT set_config('data_mash.migration', 'on', true)"))  # the guard lets migrations write
        conn.execute(text("CREATE SCHEMA IF NOT EXISTS data_mash"))
        conn.execute(
            text(
                """
                CREATE TABLE IF NOT EXISTS data_mash.schema_migrations (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
        )
        done = {row[0] for row in conn.execute(text("SELECT version FROM data_mash.schema_migrations"))}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                conn.execute(text(statement))
            conn.execute(
                text("INSERT INTO data_mash.schema_migrations (version, name) VALUES (:v, :n)"),
                {"v": migration.version, "n": migration.name},
            )
            applied_now.append(migration.version)
    return applied_now


def current_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT coalesce(max(version), 0) FROM data_mash.schema_migrations")).scalar_one()
