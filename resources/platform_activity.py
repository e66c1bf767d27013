"""Simulated business on the new platform, for the demo, the tests and the benchmarks.

After a wave, the new platform's own users change the policies it holds: they endorse them (a new
endorsement row, and the premium moves by it), cancel them, and correct insureds' addresses. This
module makes such changes directly in the platform's tables, as the platform would, stamping each
row it writes with the time of the change (`loaded_at`, the platform's last-written time). It
does not go through Data Mash's WAL: these are not Data Mash's writes, they are what its nightly
sync must find. Deterministic for a seed; set-based SQL, no loop per policy.
"""

from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Engine

from resources.database import psycopg_cursor

# share of the chosen policies per kind of change, in twentieths
KINDS = (("endorsement", 12), ("cancellation", 5), ("address", 3))
PERIODS = {"ANNUAL": 1, "SEMI_ANNUAL": 2, "QUARTERLY": 4, "MONTHLY": 12, "SINGLE": 1}


@dataclass
class Activity:
    at: datetime
    policies: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)  # kind -> policy numbers


def simulate_activity(engine: Engine, policies: int, *, seed: int = 7, at: datetime | None = None,
                      only: list[str] | None = None) -> Activity:
    """Change `policies` in-force policies on the new platform (or exactly the `only` ones): endorsements with a 5%
    premium increase, cancellations, address corrections."""
    at = at or datetime.now(timezone.utc)
    done = Activity(at)
    buckets = " ".join(f"WHEN b < {sum(n for _, n in KINDS[:i + 1])} THEN '{kind}'" for i, (kind, _) in enumerate(KINDS))
    params = {"n": policies, "seed": str(seed), "at": at, "only": only}
    periods = " ".join(f"WHEN '{mode}' THEN {n}" for mode, n in PERIODS.items())
    with psycopg_cursor(engine) as cur:
        # the platform's own users write its tables outside Data Mash: the write guard lets them say so
        cur.execute("SELECT set_config('data_mash.external_writer', 'new platform users (simulated)', true)")
        cur.execute(f"""
            CREATE TEMP TABLE activity ON COMMIT DROP AS
            SELECT policy_number, CASE {buckets} END AS kind FROM (
                SELECT policy_number, mod(abs(hashtext(policy_number || ':' || %(seed)s)), 20) AS b
                FROM new_platform.policy
                WHERE CASE WHEN %(only)s::text[] IS NULL THEN status = 'ACTIVE' ELSE policy_number = ANY(%(only)s) END
                ORDER BY md5(policy_number || ':' || %(seed)s) LIMIT %(n)s) x""", params)
        done.policies = cur.rowcount
        cur.execute("""
            INSERT INTO new_platform.endorsement (policy_number, endorsement_seq, effective_date, endorsement_code,
                                                  description, premium_change, wave_id, wal_id, loaded_at)
            SELECT p.policy_number, coalesce((SELECT max(e.endorsement_seq) FROM new_platform.endorsement e
                                              WHERE e.policy_number = p.policy_number), 0) + 1,
                   %(at)s::date, 'NPEND', 'endorsement on the new platform',
                   round(coalesce(r.annual_premium, 0) * 0.05, 2), p.wave_id, p.wal_id, %(at)s
            FROM activity a JOIN new_platform.policy p USING (policy_number)
            LEFT JOIN new_platform.rating r USING (policy_number) WHERE a.kind = 'endorsement'""", params)
        cur.execute(f"""
            UPDATE new_platform.rating r SET annual_premium = r.annual_premium + round(r.annual_premium * 0.05, 2),
                modal_premium = round((r.annual_premium + round(r.annual_premium * 0.05, 2))
                                      / CASE r.billing_mode {periods} ELSE 1 END, 2),
                loaded_at = %(at)s
            FROM activity a WHERE a.policy_number = r.policy_number AND a.kind = 'endorsement'""", params)
        cur.execute("UPDATE new_platform.policy p SET status = 'CANCELLED', loaded_at = %(at)s FROM activity a "
                    "WHERE a.policy_number = p.policy_number AND a.kind = 'cancellation'", params)
        cur.execute("UPDATE new_platform.party p SET address_line = (1 + mod(abs(hashtext(p.policy_number)), 9000))::text "
                    "|| ' Corrected Street', loaded_at = %(at)s FROM activity a WHERE a.policy_number = p.policy_number "
                    "AND a.kind = 'address' AND p.role = 'PRIMARY_INSURED'", params)
        cur.execute("SELECT kind, array_agg(policy_number ORDER BY policy_number) FROM activity GROUP BY 1")
        for kind, numbers in cur.fetchall():
            done.changed[kind] = numbers
            done.by_kind[kind] = len(numbers)
        for table in ("policy", "rating", "party", "endorsement"):
            cur.execute(f"ANALYZE new_platform.{table}")
    return done
