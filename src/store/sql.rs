//! # One way to run SQL on either store
//!
//! The API, explain and the commands read and write users, tokens, scripts, calendars and
//! snoozes through [`Sql`], which both stores implement: a SQLite connection or transaction
//! (here) and a PostgreSQL transaction ([`super::postgres::sync`]). Statements are written
//! once, with SQLite's numbered placeholders (`?1`, `?2`; PostgreSQL's `$1`, `$2` are made
//! from them), in the SQL both databases speak (`INSERT ... RETURNING`, `ON CONFLICT`,
//! `COALESCE`, `TRUE`/`FALSE`); the few statements that differ (JSON functions) ask
//! [`Sql::dialect`]. Rows come back decoded into [`Value`]s, so one reader serves both.
//!
//! The daemon's hot paths (the outbox, the matching snapshot) keep their own
//! database-specific code; this seam is for what an operator or the API does.

use super::StoreError;

/// Which database a statement runs on, for the statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer (any width on PostgreSQL; booleans on SQLite).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A boolean (PostgreSQL's `BOOLEAN`; bound as 0/1 on SQLite).
    Bool(bool),
}

/// `From<T> for Value` for the parameter types the statements use.
macro_rules! value_from {
    ($($t:ty => |$x:ident| $e:expr),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from($x: $t) -> Value {
                $e
            }
        }
    )*};
}

value_from!(
    i64 => |v| Value::Int(v),
    &i64 => |v| Value::Int(*v),
    i32 => |v| Value::Int(v.into()),
    u32 => |v| Value::Int(v.into()),
    bool => |v| Value::Bool(v),
    f64 => |v| Value::Real(v),
    &str => |v| Value::Text(v.to_owned()),
    String => |v| Value::Text(v),
    &String => |v| Value::Text(v.clone()),
    &[u8] => |v| Value::Bytes(v.to_vec()),
    Vec<u8> => |v| Value::Bytes(v),
);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
impl<T: Clone + Into<Value>> From<&Option<T>> for Value {
    fn from(v: &Option<T>) -> Value {
        v.clone().map_or(Value::Null, Into::into)
    }
}

/// Parameters for [`Sql::query`] and [`Sql::execute`]: `args![a, b]` is `[Value::from(a),
/// Value::from(b)]`.
#[macro_export]
macro_rules! args {
    ($($e:expr),* $(,)?) => { &[$($crate::store::sql::Value::from($e)),*][..] };
}
pub use args;

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a number",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Bool(_) => "a boolean",
        }
    }
}

/// A type a column can be read as with [`Row::get`].
pub trait FromValue: Sized {
    /// What the column should hold, for the error.
    const EXPECTED: &'static str;
    /// The value as `Self`, or `None` when it has another type.
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(n) => Some(*n),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
}
impl FromValue for String {
    const EXPECTED: &'static str = "text";
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Int(n) => Some(*n != 0),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    const EXPECTED: &'static str = "bytes";
    fn from_value(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Bytes(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row of a result, its columns decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row of these values.
    pub fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// Column `i` (NULL past the end).
    pub fn value(&self, i: usize) -> &Value {
        self.values.get(i).unwrap_or(&Value::Null)
    }

    /// Column `i` as `T`; a column of another type is an error naming its position and
    /// what it holds (a hand-edited row).
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, StoreError> {
        let v = self.value(i);
        T::from_value(v).ok_or_else(|| {
            StoreError::Corrupt(format!("column {i} holds {}, expected {}", v.kind(), T::EXPECTED))
        })
    }

    /// Column `i` as text, tolerating hand-entered numbers (NULL is empty).
    pub fn text(&self, i: usize) -> String {
        match self.value(i) {
            Value::Null => String::new(),
            Value::Int(n) => n.to_string(),
            Value::Real(f) => f.to_string(),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Bool(b) => b.to_string(),
        }
    }

    /// Column `i` as a flag, tolerating `0/1`, `'true'/'false'`, `'yes'`.
    pub fn truthy(&self, i: usize) -> bool {
        match self.value(i) {
            Value::Int(n) => *n != 0,
            Value::Real(f) => *f != 0.0,
            Value::Bool(b) => *b,
            Value::Text(s) => {
                matches!(s.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
            }
            Value::Null | Value::Bytes(_) => false,
        }
    }
}

/// Statements on one connection or transaction of either store.
pub trait Sql {
    /// Which database this is.
    fn dialect(&self) -> Dialect;

    /// Runs `sql` with `params` and returns every row.
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;

    /// Runs `sql` with `params` and returns the number of rows changed.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;

    /// Runs `sql` with `params` and calls `f` with each row in turn. SQLite reads one row
    /// at a time (a large result, e.g. every script for a snapshot, is never all in memory
    /// at once); the default collects the rows first.
    fn for_each_row(
        &self,
        sql: &str,
        params: &[Value],
        f: &mut dyn FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.query(sql, params)?.into_iter().try_for_each(f)
    }
}

impl dyn Sql + '_ {
    /// The first row, if any.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Column 0 of the first row as `T`; no row is an error.
    pub fn query_value<T: FromValue>(&self, sql: &str, params: &[Value]) -> Result<T, StoreError> {
        match self.query_opt(sql, params)? {
            Some(row) => row.get(0),
            None => Err(StoreError::Corrupt(format!("no row from: {}", first_line(sql)))),
        }
    }

    /// Column 0 of every row as `T`.
    pub fn query_column<T: FromValue>(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, params)?.iter().map(|r| r.get(0)).collect()
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

// SQLite: a connection (and so a transaction, through `Deref`).

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
        }))
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.for_each_row(sql, params, &mut |row| {
            out.push(row);
            Ok(())
        })?;
        Ok(out)
    }

    fn for_each_row(
        &self,
        sql: &str,
        params: &[Value],
        f: &mut dyn FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(sqlite_value(r.get_ref(i)?));
            }
            f(Row { values })?;
        }
        Ok(())
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let n = self.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }
}

/// `Sql` for a type that dereferences to a SQLite connection: every call goes to it.
macro_rules! sql_through_connection {
    ($($t:ty),*) => {$(
        impl Sql for $t {
            fn dialect(&self) -> Dialect {
                Dialect::Sqlite
            }

            fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
                Sql::query(&**self, sql, params)
            }

            fn for_each_row(
                &self,
                sql: &str,
                params: &[Value],
                f: &mut dyn FnMut(Row) -> Result<(), StoreError>,
            ) -> Result<(), StoreError> {
                Sql::for_each_row(&**self, sql, params, f)
            }

            fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
                Sql::execute(&**self, sql, params)
            }
        }
    )*};
}

sql_through_connection!(rusqlite::Transaction<'_>, super::Conn);

/// `sql` with SQLite's `?N` placeholders written as PostgreSQL's `$N` (outside quoted
/// text and identifiers).
pub fn numbered_for_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_dollars_outside_quotes() {
        assert_eq!(
            numbered_for_postgres("SELECT '?1', \"?2\" FROM t WHERE a = ?1 AND b = ?12 OR c ?| d"),
            "SELECT '?1', \"?2\" FROM t WHERE a = $1 AND b = $12 OR c ?| d"
        );
    }

    #[test]
    fn sqlite_rows_decode_and_wrong_types_name_the_column() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let sql: &dyn Sql = &conn;
        sql.execute("CREATE TABLE t (a INTEGER, b TEXT, c BLOB, d)", &[]).unwrap();
        let n = sql
            .execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
                args![7_i64, "x", vec![1_u8, 2], true],
            )
            .unwrap();
        assert_eq!(n, 1);
        let row = sql.query_opt("SELECT a, b, c, d FROM t", &[]).unwrap().unwrap();
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<String>(1).unwrap(), "x");
        assert_eq!(row.get::<Vec<u8>>(2).unwrap(), vec![1, 2]);
        assert!(row.get::<bool>(3).unwrap());
        assert_eq!(row.get::<Option<i64>>(4).unwrap(), None);
        let e = row.get::<i64>(1).unwrap_err().to_string();
        assert!(e.contains("column 1 holds text, expected an integer"), "{e}");
        assert_eq!(row.text(0), "7");
        assert!(row.truthy(3));
    }
}
