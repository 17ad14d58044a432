//! What PostgreSQL says it did: the database's committed transactions and written rows
//! (`pg_stat_database`), the rows written per table (`pg_stat_user_tables`) and the WAL it
//! produced, read with `psql` (Debian's client, which comes with the server the bench runs
//! against) so that the bench needs no database driver of its own.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tokio::process::Command;

/// The transactions one snapshot itself commits (one per `-c`, one as psql connects; counted
/// on PostgreSQL 15): subtracted from the next snapshot's count, which includes them.
const SNAPSHOT_XACTS: u64 = 3;

/// Cumulative counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub xact_commit: u64,
    /// tup_inserted + tup_updated + tup_deleted.
    pub rows_written: u64,
    /// pg_current_wal_lsn() as bytes (the whole cluster: the bench's cluster holds one database).
    pub wal_bytes: u64,
    /// n_tup_ins + n_tup_upd + n_tup_del per table.
    pub tables: BTreeMap<String, u64>,
}

/// The counters' growth between two snapshots.
#[derive(Clone, Debug, Serialize)]
pub struct Delta {
    /// Committed transactions, reads included, the snapshots' own left out.
    pub transactions: u64,
    pub rows_written: u64,
    pub wal_bytes: u64,
    /// Rows written per table, only tables that were written.
    pub rows_by_table: BTreeMap<String, u64>,
}

impl Snapshot {
    pub async fn take(url: &str) -> Result<Self> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(url)
            .args([
                "-c",
                "SELECT 'db', xact_commit, tup_inserted + tup_updated + tup_deleted, \
                 pg_current_wal_lsn() - '0/0'::pg_lsn \
                 FROM pg_stat_database WHERE datname = current_database()",
                "-c",
                "SELECT 'table', relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables",
            ])
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("cannot run psql (Debian: apt-get install postgresql-client)")?;
        if !out.status.success() {
            bail!(
                "psql failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse(&String::from_utf8_lossy(&out.stdout))
    }

    pub fn delta_since(&self, before: &Snapshot) -> Delta {
        let rows_by_table = self
            .tables
            .iter()
            .filter_map(|(table, after)| {
                let grew = after.saturating_sub(before.tables.get(table).copied().unwrap_or(0));
                (grew > 0).then(|| (table.clone(), grew))
            })
            .collect();
        Delta {
            transactions: self
                .xact_commit
                .saturating_sub(before.xact_commit)
                .saturating_sub(SNAPSHOT_XACTS),
            rows_written: self.rows_written.saturating_sub(before.rows_written),
            wal_bytes: self.wal_bytes.saturating_sub(before.wal_bytes),
            rows_by_table,
        }
    }
}

fn parse(text: &str) -> Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut saw_db = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let number = |i: usize| -> Result<u64> {
            let field = fields
                .get(i)
                .ok_or_else(|| anyhow!("short psql line {line:?}"))?;
            // The WAL position is numeric; it has no fraction, but say so if it ever does.
            field
                .trim()
                .split('.')
                .next()
                .unwrap_or_default()
                .parse()
                .with_context(|| format!("unreadable number in psql line {line:?}"))
        };
        match fields.first() {
            Some(&"db") => {
                snapshot.xact_commit = number(1)?;
                snapshot.rows_written = number(2)?;
                snapshot.wal_bytes = number(3)?;
                saw_db = true;
            }
            Some(&"table") => {
                let name = fields
                    .get(1)
                    .ok_or_else(|| anyhow!("short psql line {line:?}"))?;
                snapshot.tables.insert((*name).to_owned(), number(2)?);
            }
            _ => bail!("unexpected psql line {line:?}"),
        }
    }
    if !saw_db {
        bail!("psql printed no statistics for the database");
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_subtracts() {
        let before = parse("db\t100\t50\t4096\ntable\tnodes\t10\ntable\tagents\t7\n").unwrap();
        let after = parse("db\t112\t53\t8192\ntable\tnodes\t13\ntable\tagents\t7\n").unwrap();
        let d = after.delta_since(&before);
        assert_eq!(d.transactions, 12 - SNAPSHOT_XACTS);
        assert_eq!(d.rows_written, 3);
        assert_eq!(d.wal_bytes, 4096);
        assert_eq!(d.rows_by_table.len(), 1);
        assert_eq!(d.rows_by_table["nodes"], 3);
        assert!(parse("").is_err());
        assert!(parse("db\tx\t1\t2\n").is_err());
    }
}
