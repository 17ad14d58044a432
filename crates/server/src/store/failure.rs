//! Which errors are the storage failing (rather than the data or the request), on either
//! database, so that the API answers 503 or 507 with a clear message.

use sqlx::postgres::PgDatabaseError;

use super::StoreError;

/// How the storage failed, for errors that are not about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    /// No space left: writes fail until some is freed (reads still work).
    Full,
    /// The database cannot be used right now (I/O error, locked past the busy timeout,
    /// unreadable, read-only, pool closed; on PostgreSQL: unreachable, refusing connections,
    /// shutting down, out of resources, or no connection free within the acquire timeout).
    Unavailable,
}

impl StoreError {
    /// Whether this error is the storage failing (rather than the data or the request).
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        let Self::Database(e) = self else {
            return None;
        };
        match e {
            sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
                Some(pg) => postgres_failure(pg.code()),
                None => sqlite_failure(db.code()?.parse().ok()?),
            },
            sqlx::Error::Io(io) if io.raw_os_error() == Some(ENOSPC) => Some(StorageFailure::Full),
            // A lost or refused connection, TLS failing, or a server that stopped answering
            // mid-protocol: all are the database out of reach.
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Some(StorageFailure::Unavailable),
            _ => None,
        }
    }
}

/// Whether PostgreSQL refused text it cannot hold: a NUL character (SQLSTATE 22021,
/// character_not_in_repertoire; 22P05, untranslatable_character).
pub fn is_unstorable_text(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.code(), "22021" | "22P05"))
}

/// SQLite's extended result code: the primary code is its low byte.
fn sqlite_failure(code: i32) -> Option<StorageFailure> {
    match code & 0xff {
        SQLITE_FULL => Some(StorageFailure::Full),
        SQLITE_BUSY | SQLITE_LOCKED | SQLITE_READONLY | SQLITE_IOERR | SQLITE_CORRUPT
        | SQLITE_CANTOPEN | SQLITE_NOTADB => Some(StorageFailure::Unavailable),
        _ => None,
    }
}

/// PostgreSQL's SQLSTATE (appendix A of its manual): the class is the first two characters.
fn postgres_failure(sqlstate: &str) -> Option<StorageFailure> {
    match sqlstate {
        // disk_full
        "53100" => Some(StorageFailure::Full),
        // Connection exceptions, authentication refused, the database gone, out of
        // resources (connections, memory), shutting down or starting, system I/O errors.
        _ if ["08", "28", "3D", "53", "57", "58"].contains(&sqlstate.get(..2).unwrap_or("")) => {
            Some(StorageFailure::Unavailable)
        }
        // read_only_sql_transaction: a standby after a failover, until the primary is back.
        "25006" => Some(StorageFailure::Unavailable),
        _ => None,
    }
}

// SQLite's primary result codes (sqlite3.h) and Linux's "no space left on device".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;
const ENOSPC: i32 = 28;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_states_are_classified() {
        assert_eq!(postgres_failure("53100"), Some(StorageFailure::Full));
        for unavailable in [
            "08006", "28P01", "3D000", "53300", "57P01", "58030", "25006",
        ] {
            assert_eq!(
                postgres_failure(unavailable),
                Some(StorageFailure::Unavailable),
                "{unavailable}"
            );
        }
        for request in ["23505", "22021", "40001", ""] {
            assert_eq!(postgres_failure(request), None, "{request}");
        }
    }
}
