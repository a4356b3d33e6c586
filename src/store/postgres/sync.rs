//! [`Sql`] on PostgreSQL: one transaction on a pooled connection, driven from a blocking
//! thread (the API's `spawn_blocking` closures, a command's main thread) by the runtime
//! the pool was made on, so the code that reads and writes users, tokens, scripts,
//! calendars and snoozes is the same for both stores.
//!
//! Parameters are [`Value`]s converted to the type PostgreSQL infers for each placeholder
//! (an integer to `INTEGER` or `BIGINT`, 0/1 to `BOOLEAN`), and columns of the types the
//! schema uses are decoded back into [`Value`]s.
//!
//! Writes take a transaction-level advisory lock first ([`WRITE_LOCK`]), so writes through
//! the API and the commands are serialised across instances as SQLite's `IMMEDIATE`
//! transactions serialise them on one file: a check and the write it guards (a login still
//! free, a script still the caller's) cannot be separated by another writer.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{PgConn, PgStore};
use crate::store::StoreError;
use crate::store::sql::{Dialect, Row, Sql, Value, numbered_for_postgres};

/// The advisory lock key every write transaction of [`PgStore::write`] holds until it
/// ends (`pg_advisory_xact_lock`): the bytes of "scriptd-w".
pub const WRITE_LOCK: i64 = 0x7363_7269_7074_6477;

/// One open transaction; rolled back (and its connection closed) if dropped unfinished.
struct PgTx<'a> {
    store: &'a PgStore,
    conn: Option<PgConn>,
}

impl PgTx<'_> {
    fn conn(&self) -> Result<&PgConn, StoreError> {
        self.conn.as_ref().ok_or_else(|| StoreError::TaskFailed("transaction already ended".into()))
    }

    fn params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
    }

    fn finish(mut self, commit: bool) -> Result<(), StoreError> {
        let Some(conn) = self.conn.take() else { return Ok(()) };
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        match self.store.handle.block_on(conn.batch_execute(sql)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = deadpool_postgres::Object::take(conn);
                Err(self.store.error(&e))
            }
        }
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        // Unfinished (a panic in the caller): the connection is not given back mid-transaction.
        if let Some(conn) = self.conn.take() {
            let _ = deadpool_postgres::Object::take(conn);
        }
    }
}

impl Sql for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let (conn, text, params) = (self.conn()?, numbered_for_postgres(sql), Self::params(params));
        let rows = self
            .store
            .handle
            .block_on(async {
                let stmt = conn.prepare_cached(&text).await?;
                conn.query(&stmt, &params).await
            })
            .map_err(|e| self.store.error(&e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<_, Value>(i).map_err(|e| self.store.error(&e)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row::new)
            })
            .collect()
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let (conn, text, params) = (self.conn()?, numbered_for_postgres(sql), Self::params(params));
        self.store
            .handle
            .block_on(async {
                let stmt = conn.prepare_cached(&text).await?;
                conn.execute(&stmt, &params).await
            })
            .map_err(|e| self.store.error(&e))
    }
}

impl PgStore {
    /// Runs `f` in one read-committed transaction and commits it; an error from `f` rolls
    /// it back. Blocking: call it from `spawn_blocking` or outside the runtime, never from
    /// async code.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(false, f)
    }

    /// [`PgStore::read`] for writes: the transaction holds [`WRITE_LOCK`].
    pub fn write<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(true, f)
    }

    /// Runs `f` to completion on the runtime the pool was made on, from a blocking thread.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    fn transaction<T>(
        &self,
        write: bool,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.handle.block_on(self.get())?;
        let begin = if write {
            format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        } else {
            "BEGIN".to_owned()
        };
        if let Err(e) = self.handle.block_on(conn.batch_execute(&begin)) {
            let _ = deadpool_postgres::Object::take(conn);
            return Err(self.error(&e));
        }
        let tx = PgTx { store: self, conn: Some(conn) };
        match f(&tx) {
            Ok(v) => tx.finish(true).map(|()| v),
            Err(e) => {
                let _ = tx.finish(false);
                Err(e)
            }
        }
    }
}

/// After rows were inserted into `table` with explicit ids (an import, `users add --id`),
/// moves its identity past the largest id, so that the next row without an id does not
/// collide (PostgreSQL's identity, unlike SQLite's rowid, does not follow explicit ids).
pub fn follow_explicit_ids(conn: &dyn Sql, table: &str) -> Result<(), StoreError> {
    conn.query(
        &format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                           GREATEST((SELECT MAX(id) FROM {table}), 1))"
        ),
        &[],
    )?;
    Ok(())
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let wrong = |what: &str| -> Box<dyn Error + Sync + Send> {
            format!("cannot pass {what} as {ty}").into()
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().to_sql(ty, out),
                _ => Err(wrong("an integer")),
            },
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 => i64::from(*b).to_sql(ty, out),
                Type::INT4 => i32::from(*b).to_sql(ty, out),
                _ => Err(wrong("a boolean")),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(wrong("a number")),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(wrong("text")),
            },
            Value::Bytes(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(wrong("bytes")),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            _ => return Err(format!("a column of type {ty} cannot be read").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}
